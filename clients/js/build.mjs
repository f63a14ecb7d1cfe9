// Builds dist/: tickfan.mjs (ES module, for bundlers and Node), tickfan.js
// (browser global `Tickfan`, served by the broker at <demo_path>/tickfan.js)
// and index.d.ts (types). dist/ is committed, because the broker embeds the
// bundle at compile time; scripts/test.sh rebuilds it and fails when the
// result differs from what is committed. `--check` prints the sizes.
import { build } from "esbuild";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";

const banner = { js: "/* tickfan client (clients/js) */" };
const common = { bundle: true, minify: true, target: "es2020", legalComments: "none", banner, logLevel: "warning" };
await build({ ...common, entryPoints: ["src/index.ts"], format: "esm", outfile: "dist/tickfan.mjs" });
await build({ ...common, entryPoints: ["src/global.ts"], format: "iife", outfile: "dist/tickfan.js" });
execFileSync(process.execPath, ["node_modules/typescript/bin/tsc", "-p", "tsconfig.json"], { stdio: "inherit" });

for (const file of ["dist/tickfan.mjs", "dist/tickfan.js"]) {
  const bytes = readFileSync(file);
  const gz = gzipSync(bytes, { level: 9 }).length;
  console.log(`${file}: ${bytes.length} bytes minified, ${gz} bytes gzipped`);
  if (gz > 10 * 1024) {
    console.error(`${file} is over the 10 KB (min+gzip) budget`);
    process.exit(1);
  }
}
