// Remote control for the official Node.js provisioning client (azure-iot-provisioning-device with the
// MQTT transport and a symmetric-key security client), then the Node.js device client over MQTT.
//
// Runs under `node` with NODE_PATH pointing at the npm folder the peer tests install, and
// NODE_EXTRA_CA_CERTS at the emulator's CA file. Speaks the JSON-lines protocol of sdk_driver.py:
// a greeting line, then exactly one answer line per command line on stdin.
//
// Commands: register_group {provisioning_host, id_scope, registration_id, group_key, payload?}: derive
// the device key from the group key as Microsoft's samples do, register, answer the registration state
// (or {error} with allow_error); connect_hub {hostname, device_id}: open a device client with the
// derived key; send_message {body}; shutdown.
'use strict';

const crypto = require('crypto');
const readline = require('readline');

const ProvisioningDeviceClient = require('azure-iot-provisioning-device').ProvisioningDeviceClient;
const ProvisioningMqtt = require('azure-iot-provisioning-device-mqtt').Mqtt;
const SymmetricKeySecurityClient = require('azure-iot-security-symmetric-key').SymmetricKeySecurityClient;
const DeviceClient = require('azure-iot-device').Client;
const Message = require('azure-iot-device').Message;
const DeviceMqtt = require('azure-iot-device-mqtt').Mqtt;

// Answers go to the real stdout only; anything the SDKs print goes to stderr.
const channel = process.stdout;
console.log = console.error;

function answer(payload) {
  channel.write(JSON.stringify(payload) + '\n');
}

function deriveDeviceKey(groupKey, registrationId) {
  return crypto.createHmac('SHA256', Buffer.from(groupKey, 'base64'))
    .update(registrationId, 'utf8')
    .digest('base64');
}

let deviceKey = null;
let hubClient = null;

const commands = {
  register_group: (command) => new Promise((resolve, reject) => {
    deviceKey = deriveDeviceKey(command.group_key, command.registration_id);
    const security = new SymmetricKeySecurityClient(command.registration_id, deviceKey);
    const client = ProvisioningDeviceClient.create(
      command.provisioning_host, command.id_scope, new ProvisioningMqtt(), security);
    if (command.payload !== undefined) {
      client.setProvisioningPayload(command.payload);
    }
    client.register((err, result) => {
      if (err) {
        if (command.allow_error) {
          resolve({ error: `${err.name}: ${err.message}` });
        } else {
          reject(err);
        }
        return;
      }
      resolve({
        status: result.status,
        device_id: result.deviceId,
        assigned_hub: result.assignedHub,
        sub_status: result.substatus,
        etag: result.etag,
        payload: result.payload === undefined ? null : result.payload,
      });
    });
  }),

  connect_hub: async (command) => {
    const connectionString = `HostName=${command.hostname};DeviceId=${command.device_id};SharedAccessKey=${deviceKey}`;
    hubClient = DeviceClient.fromConnectionString(connectionString, DeviceMqtt);
    await hubClient.open();
    return { connected: true };
  },

  send_message: async (command) => {
    await hubClient.sendEvent(new Message(command.body));
    return null;
  },

  shutdown: async () => {
    if (hubClient !== null) {
      await hubClient.close();
    }
    return { unexpected_disconnects: 0, background_errors: [] };
  },
};

const versions = {};
for (const name of ['azure-iot-provisioning-device', 'azure-iot-provisioning-device-mqtt',
  'azure-iot-security-symmetric-key', 'azure-iot-device', 'azure-iot-device-mqtt']) {
  versions[name] = require(`${name}/package.json`).version;
}
answer({ ready: true, sdk_version: versions, node_version: process.version });

const lines = readline.createInterface({ input: process.stdin });
let queue = Promise.resolve();
lines.on('line', (line) => {
  // One command at a time, in order, as the Python drivers do.
  queue = queue.then(async () => {
    const command = JSON.parse(line);
    const handler = commands[command.op];
    try {
      if (handler === undefined) {
        throw new Error(`unknown op ${command.op}`);
      }
      answer({ ok: true, result: await handler(command) });
    } catch (err) {
      answer({ ok: false, error: `${err.name}: ${err.message}`, traceback: String(err.stack) });
    }
    if (command.op === 'shutdown') {
      process.exit(0);
    }
  });
});
lines.on('close', () => {
  queue.then(() => commands.shutdown()).finally(() => process.exit(0));
});
