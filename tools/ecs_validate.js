#!/usr/bin/env node
// Validates ECS documents, one JSON object per line, against the field set
// of the npm package @elastic/ecs (its EcsFlat: every ECS field with its
// type, whether it is an array, and its allowed values).
//
//   node tools/ecs_validate.js PATH_TO_@elastic/ecs FILE
//
// Every leaf must be an ECS field (or sit under an `object`/`flattened`
// field such as `labels`), of the field's type, an array where ECS says
// so, with an allowed value where ECS lists them, and each `event.type`
// must be one ECS expects for one of the document's `event.category`.
// Prints `ok <event.action>` or `FAIL <line>: <why>` per document; exits 1
// when any fails. Installed by `cargo xtask setup --test-tools` into
// target/tools/ecs.

'use strict';
const fs = require('fs');
const net = require('net');

const [pkg, file] = process.argv.slice(2);
if (!pkg || !file) {
  console.error('usage: ecs_validate.js PATH_TO_@elastic/ecs FILE');
  process.exit(2);
}
const ecs = require(pkg);
const flat = ecs.EcsFlat;
const version = ecs.EcsVersion;

const STRING = ['keyword', 'constant_keyword', 'wildcard', 'text', 'match_only_text'];
const INTEGER = ['long', 'integer', 'short', 'byte', 'unsigned_long'];
const NUMBER = ['float', 'half_float', 'scaled_float', 'double'];

function typeOk(type, v) {
  if (STRING.includes(type)) return typeof v === 'string';
  if (INTEGER.includes(type)) return Number.isInteger(v);
  if (NUMBER.includes(type)) return typeof v === 'number';
  if (type === 'boolean') return typeof v === 'boolean';
  if (type === 'ip') return typeof v === 'string' && net.isIP(v) !== 0;
  if (type === 'date') return (typeof v === 'string' && !isNaN(Date.parse(v))) || Number.isInteger(v);
  return false;
}

// An ancestor that takes any keys (labels, *.geo.location, …).
function openAncestor(name) {
  const parts = name.split('.');
  for (let i = parts.length - 1; i > 0; i--) {
    const f = flat[parts.slice(0, i).join('.')];
    if (f && ['object', 'flattened', 'nested'].includes(f.type)) return f;
  }
  return null;
}

function leaves(obj, prefix, out) {
  for (const [k, v] of Object.entries(obj)) {
    const name = prefix ? `${prefix}.${k}` : k;
    if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
      if (flat[name] && ['object', 'flattened'].includes(flat[name].type)) {
        out.push([name, v]);
      } else {
        leaves(v, name, out);
      }
    } else {
      out.push([name, v]);
    }
  }
  return out;
}

function check(doc) {
  const problems = [];
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) return ['not a JSON object'];
  if (!doc['@timestamp']) problems.push('@timestamp missing');
  if (!doc.ecs || doc.ecs.version !== version) problems.push(`ecs.version is not ${version}`);
  for (const [name, value] of leaves(doc, '', [])) {
    const f = flat[name];
    if (!f) {
      const open = openAncestor(name);
      if (!open) problems.push(`${name}: not a field of ECS ${version}`);
      else if (open.type === 'object' && typeof value !== 'string' && typeof value !== 'number' && typeof value !== 'boolean')
        problems.push(`${name}: ${open.flat_name} holds scalar values`);
      continue;
    }
    if (['object', 'flattened'].includes(f.type)) {
      if (value === null || typeof value !== 'object') problems.push(`${name}: must be an object`);
      continue;
    }
    const isArray = (f.normalize || []).includes('array');
    if (isArray && !Array.isArray(value)) problems.push(`${name}: ECS expects an array`);
    const values = Array.isArray(value) ? value : [value];
    for (const v of values) {
      if (!typeOk(f.type, v)) problems.push(`${name}: ${JSON.stringify(v)} is not of type ${f.type}`);
      if (f.allowed_values && !f.allowed_values.some((a) => a.name === v))
        problems.push(`${name}: ${JSON.stringify(v)} is not an allowed value`);
    }
  }
  const ev = doc.event || {};
  const cats = [].concat(ev.category || []);
  const catDefs = (flat['event.category'].allowed_values || []).filter((a) => cats.includes(a.name));
  for (const t of [].concat(ev.type || [])) {
    if (!catDefs.some((c) => (c.expected_event_types || []).includes(t)))
      problems.push(`event.type ${t} is not expected for event.category ${JSON.stringify(cats)}`);
  }
  if (!ev.kind) problems.push('event.kind missing');
  return problems;
}

let failed = 0;
fs.readFileSync(file, 'utf8').split('\n').forEach((line, i) => {
  if (!line.trim()) return;
  let doc;
  let problems;
  try {
    doc = JSON.parse(line);
    problems = check(doc);
  } catch (e) {
    problems = [`not JSON: ${e.message}`];
  }
  if (problems.length) {
    failed++;
    console.log(`FAIL ${i + 1}: ${problems.join('; ')}`);
  } else {
    console.log(`ok ${doc.event.action}`);
  }
});
process.exit(failed ? 1 : 0);
