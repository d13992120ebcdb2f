// The benchmark process on bpmn-engine, one instance at a time after a warm-up.
// Usage: node bench.mjs N  (run from a folder where `npm install` put bpmn-engine)
// Prints one JSON line: engine, n, per_sec, p50_us, p99_us.
import {readFileSync} from 'node:fs';
import {Engine} from 'bpmn-engine';
import BpmnModdle from 'bpmn-moddle';
import * as elements from 'bpmn-elements';
import serializer, {TypeResolver} from 'moddle-context-serializer';

const here = new URL('.', import.meta.url);
const source = readFileSync(new URL('score.bpmn', here), 'utf8');
const version = JSON.parse(
  readFileSync(new URL('node_modules/bpmn-engine/package.json', here), 'utf8'),
).version;
const n = Number(process.argv[2] ?? 2000);
if (!Number.isInteger(n) || n < 1) {
  console.error(`bench.mjs: N must be a whole number above 0, not ${process.argv[2]}`);
  process.exit(2);
}

// Parsed once, as Ciclo parses a process once at deploy: each instance gets a new engine on
// the same serialized definition (bpmn-engine's `sourceContext`), not a new parse of the XML.
const sourceContext = serializer(await new BpmnModdle().fromXML(source), TypeResolver(elements));

// bpmn-engine's default script handler runs every script (and the gateway's condition) in a
// new `node:vm` context, which costs about a millisecond each. Its `scripts` option takes
// another handler: this one compiles each script once with `new Function` (no sandbox), as a
// user tuning for speed would. Both are measured.
const compiled = new Map();
function CompiledScripts() {
  this.scripts = new Map();
}
CompiledScripts.prototype.register = function register({id, type, behaviour}) {
  const expression = type === 'bpmn:SequenceFlow' ? behaviour.conditionExpression : null;
  const language = expression ? expression.language : behaviour.scriptFormat;
  const body = expression ? expression.body : behaviour.script;
  if (!language || !body) return undefined;
  let run = compiled.get(body);
  if (!run) {
    run = new Function('environment', 'next', body);
    compiled.set(body, run);
  }
  const script = {id, execute: (context, next) => run(context.environment, next)};
  this.scripts.set(id, script);
  return script;
};
CompiledScripts.prototype.getScript = function getScript(language, {id}) {
  return this.scripts.get(id);
};

// The engine may end before `execute` returns, so `once('end')` is set up before it.
async function one(tuned) {
  const options = {name: 'score', sourceContext};
  if (tuned) options.scripts = new CompiledScripts();
  const engine = new Engine(options);
  const ended = new Promise((resolve, reject) => {
    engine.once('end', resolve);
    engine.once('error', reject);
  });
  const execution = await engine.execute({variables: {amount: 500}});
  await ended;
  const out = execution.environment.output;
  if (out.score !== 1000 || out.approved !== true) {
    throw new Error(`wrong result: ${JSON.stringify(out)}`);
  }
}

async function measure(tuned, label) {
  for (let i = 0; i < Math.min(n, 500); i++) await one(tuned);
  const latencies = [];
  const began = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    const s = process.hrtime.bigint();
    await one(tuned);
    latencies.push(Number(process.hrtime.bigint() - s) / 1000);
  }
  const elapsed = Number(process.hrtime.bigint() - began) / 1e9;
  latencies.sort((a, b) => a - b);
  const pick = (q) => latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * q))];
  console.log(JSON.stringify({
    engine: `bpmn-engine ${version}, ${label} (Node.js ${process.versions.node})`,
    n, per_sec: n / elapsed, p50_us: pick(0.5), p99_us: pick(0.99),
  }));
}

await measure(false, 'default vm scripts');
await measure(true, 'scripts compiled once');
