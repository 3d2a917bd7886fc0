#!/usr/bin/env node
// An HTTP/2 provider as a user has it, for `apns-sim run` (interop/run_unmodified.sh): Node's
// built-in http2 module, Apple's sandbox host and port hard-coded, Node's own trust store
// (its Mozilla roots plus NODE_EXTRA_CA_CERTS, which `apns-sim run` sets). Only the
// credentials and the device token come from the environment (APNS_SIM_CERT_FILE,
// APNS_SIM_KEY_FILE, APNS_SIM_TOKEN); the delivery is checked on the control API
// (APNS_SIM_CONTROL_URL, /v1/notifications/wait: the simulator's event, no sleep).
// Exit status: 0 when the answer was 200 and the device got the notification; 1 otherwise.
'use strict';
const fs = require('fs');
const http = require('http');
const http2 = require('http2');

const APNS = 'https://api.sandbox.push.apple.com:443';
const ALERT = 'hello from node http2';
const token = process.env.APNS_SIM_TOKEN;

function push() {
  return new Promise((resolve, reject) => {
    const session = http2.connect(APNS, {
      cert: fs.readFileSync(process.env.APNS_SIM_CERT_FILE),
      key: fs.readFileSync(process.env.APNS_SIM_KEY_FILE),
    });
    session.on('error', reject);
    const req = session.request({
      ':method': 'POST',
      ':path': `/3/device/${token}`,
      'apns-topic': 'com.example.app',
      'apns-push-type': 'alert',
    });
    let status = 0;
    let body = '';
    req.on('response', (headers) => { status = headers[':status']; });
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => { session.close(); resolve({ status, body }); });
    req.on('error', reject);
    req.end(JSON.stringify({ aps: { alert: ALERT } }));
  });
}

function delivered() {
  const url = `${process.env.APNS_SIM_CONTROL_URL}/v1/notifications/wait?token=${token}` +
    '&outcome=acknowledged&count=1&timeout_ms=20000';
  return new Promise((resolve, reject) => {
    http.get(url, (res) => {
      let body = '';
      res.on('data', (chunk) => { body += chunk; });
      res.on('end', () => {
        if (res.statusCode !== 200) { console.log(`no delivery: ${res.statusCode} ${body}`); return resolve(false); }
        const alerts = JSON.parse(body).notifications.map((n) => n.payload.aps && n.payload.aps.alert);
        console.log(`delivered: ${JSON.stringify(alerts)}`);
        resolve(alerts.includes(ALERT));
      });
    }).on('error', reject);
  });
}

(async () => {
  const answer = await push();
  console.log(`${APNS}: ${answer.status} ${answer.body}`);
  process.exit(answer.status === 200 && (await delivered()) ? 0 : 1);
})().catch((e) => { console.log(`error: ${e.message}`); process.exit(1); });
