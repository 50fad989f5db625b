#!/usr/bin/env node
// care-gateway command line: `care-gateway [serve]` runs the gateway, `care-gateway convert FILE [--source NAME]`
// converts without a server. The TypeScript is compiled to dist/ by `npm install` (the prepare script).
import fs from 'node:fs';
const cli = new URL('../dist/src/cli.js', import.meta.url);
if (!fs.existsSync(cli)) {
  process.stderr.write('care-gateway is not built yet: run `npm install` (or `npm run build`) in the project folder first.\n');
  process.exit(2);
}
await import(cli.href);
