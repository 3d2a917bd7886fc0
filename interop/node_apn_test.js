#!/usr/bin/env node
// Interop test: @parse/node-apn (unmodified, from interop/node_modules) against apns-sim's
// HTTP/2 API, in both auth modes. Started by interop/run.py with the path of a JSON config
// ({host, port, certs, key_id, team_id, topic, payload, tokens: {live, bad, gone}}); prints
// one JSON object per request on stdout:
//   {"lib":"node-apn","auth":"cert|token","case":"live|bad|gone",
//    "status":200|400|410|null,"reason":…,"timestamp":…,"apns_id":…,"error":…}
// run.py judges the outcomes; this script only reports what the library returned.
//
// Pointing the library at the simulator needs no patching: node-apn takes `address` and
// `port` options (lib/config.js) and hands its whole config to http2.connect, so `port`
// reaches tls.connect; `ca` is its documented option for extra trust roots. It offers ALPN
// h2 and sends `:authority: <address>` (127.0.0.1, so the simulator's default environment,
// sandbox, applies).
//
// node-apn returns successes in `sent` without their status (it takes 200, 201 and 204 as
// success), so the status of each response is read from the library's own log line
// ("Request ended with status N …") through its public Client#setLogger.

'use strict';

const fs = require('fs');
const path = require('path');
const apn = require('@parse/node-apn');

const REQUEST_TIMEOUT_MS = 10000;

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function describeError(err) {
  if (!err) return null;
  if (err instanceof Error) return err.message;
  if (err.error instanceof Error) return err.error.message;
  return JSON.stringify(err);
}

async function runMode(cfg, auth) {
  const certs = cfg.certs;
  const common = {
    address: cfg.host,
    port: cfg.port,
    production: false,
    ca: path.join(certs, 'ca.pem'),
    requestTimeout: REQUEST_TIMEOUT_MS,
    connectionRetryLimit: 0,
  };
  const options =
    auth === 'cert'
      ? {
          ...common,
          cert: path.join(certs, 'provider.pem'),
          key: path.join(certs, 'provider-key.pem'),
        }
      : {
          ...common,
          token: {
            key: path.join(certs, `AuthKey_${cfg.key_id}.p8`),
            keyId: cfg.key_id,
            teamId: cfg.team_id,
          },
        };

  let provider;
  try {
    provider = new apn.Provider(options);
  } catch (err) {
    for (const c of ['live', 'bad', 'gone']) {
      emit({ lib: 'node-apn', auth, case: c, status: null, error: `Provider: ${describeError(err)}` });
    }
    return;
  }

  // Statuses in the order the library logged them (requests run one at a time).
  const logged = [];
  const logger = msg => {
    const m = /^Request ended with status (\d+) /.exec(String(msg));
    if (m) logged.push(m[1]);
  };
  logger.enabled = true;
  const quiet = () => {};
  quiet.enabled = false;
  provider.client.setLogger(logger, quiet);

  let stalled = null; // after a request that got no answer in time, skip the others
  try {
    for (const c of ['live', 'bad', 'gone']) {
      if (stalled) {
        emit({ lib: 'node-apn', auth, case: c, status: null, error: `skipped: ${stalled}` });
        continue;
      }
      const note = new apn.Notification();
      note.topic = cfg.topic;
      note.rawPayload = cfg.payload;
      const before = logged.length;
      const result = {
        lib: 'node-apn',
        auth,
        case: c,
        status: null,
        reason: null,
        timestamp: null,
        apns_id: null,
        error: null,
      };
      try {
        const { sent, failed } = await withTimeout(
          provider.send(note, cfg.tokens[c]),
          REQUEST_TIMEOUT_MS + 5000,
          'provider.send'
        );
        const seen = logged.length > before ? Number(logged[logged.length - 1]) : null;
        if (sent.length === 1) {
          result.status = seen;
          result.apns_id = sent[0]['apns-id'] || null;
          result.sent = true;
        } else if (failed.length === 1) {
          const f = failed[0];
          result.status = typeof f.status === 'number' ? f.status : seen;
          result.apns_id = f['apns-id'] || null;
          if (f.response) {
            result.reason = f.response.reason ?? null;
            result.timestamp = f.response.timestamp ?? null;
          }
          if (f.error) result.error = describeError(f);
        } else {
          result.error = `unexpected result: ${JSON.stringify({ sent, failed })}`;
        }
      } catch (err) {
        result.error = describeError(err);
      }
      if (result.status === null && /timeout|no answer/.test(result.error || '')) {
        stalled = `the ${c} request got no answer within ${REQUEST_TIMEOUT_MS} ms`;
      }
      emit(result);
    }
  } finally {
    await withTimeout(provider.shutdown(), 5000, 'provider.shutdown').catch(() => {});
  }
}

async function main() {
  const cfg = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const modes = process.argv.slice(3);
  for (const auth of modes.length ? modes : ['cert', 'token']) {
    await runMode(cfg, auth);
  }
}

main().then(
  () => process.exit(0),
  err => {
    process.stderr.write(`node_apn_test: ${err && err.stack ? err.stack : err}\n`);
    process.exit(1);
  }
);
