// Push one notification with @parse/node-apn (HTTP/2), with certificate or token auth.
//
//   node node_apn.js cert|token
//
// Reads what `apns-sim test` sets: APNS_SIM_HTTP2 (host:port), APNS_SIM_TOKEN,
// APNS_SIM_CA_FILE, APNS_SIM_CERT_FILE + APNS_SIM_KEY_FILE, or APNS_SIM_AUTH_KEY_FILE +
// APNS_SIM_KEY_ID + APNS_SIM_TEAM_ID. Exits 0 when the push was accepted, 1 otherwise.
'use strict';

const apn = require('@parse/node-apn');

const env = process.env;
const [address, port] = env.APNS_SIM_HTTP2.split(':');
const auth = process.argv[2];

const provider = new apn.Provider({
  address, // node-apn takes a host and a port: no patching needed
  port: Number(port),
  production: false,
  ca: env.APNS_SIM_CA_FILE, // trust the simulator's CA
  ...(auth === 'cert'
    ? { cert: env.APNS_SIM_CERT_FILE, key: env.APNS_SIM_KEY_FILE }
    : { token: { key: env.APNS_SIM_AUTH_KEY_FILE, keyId: env.APNS_SIM_KEY_ID, teamId: env.APNS_SIM_TEAM_ID } }),
});

const note = new apn.Notification();
note.topic = 'com.example.app';
note.alert = 'Hello from apns-sim';

provider.send(note, env.APNS_SIM_TOKEN).then(({ sent, failed }) => {
  console.log(auth, 'sent:', sent.length, 'failed:', JSON.stringify(failed));
  provider.shutdown();
  process.exitCode = sent.length === 1 ? 0 : 1;
});
