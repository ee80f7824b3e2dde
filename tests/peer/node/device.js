// Microsoft's Node.js device SDK (azure-iot-device + azure-iot-device-mqtt) against the emulator.
// The device's connection string comes in DEVICE_CONNECTION_STRING and the CA in NODE_EXTRA_CA_CERTS.
// Each step prints one JSON line {"step": ...}: what the SDK did, then everything it receives
// (desired patches, method requests, cloud-to-device messages) until stdin closes.
'use strict';
const { Client, Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');

function report(step, values) {
  process.stdout.write(JSON.stringify({ step, ...values }) + '\n');
}

async function main() {
  const client = Client.fromConnectionString(process.env.DEVICE_CONNECTION_STRING, Mqtt);
  client.on('error', (err) => console.error('client error', err));
  await client.open();
  report('connected', {});

  const message = new Message(JSON.stringify({ temperature: 21.5 }));
  message.messageId = 'node-1';
  message.contentType = 'application/json';
  message.contentEncoding = 'utf-8';
  message.properties.add('alert', 'high');
  await client.sendEvent(message);
  report('sent', {});

  const twin = await client.getTwin();
  report('twin', { desired: twin.properties.desired, reported: twin.properties.reported });
  await new Promise((resolve, reject) => twin.properties.reported.update({ fw: '2.0' }, (err) => (err ? reject(err) : resolve())));
  report('reported', {});

  // The SDK hands the current desired properties to a new listener first; patches come after.
  await new Promise((resolve) => {
    let first = true;
    twin.on('properties.desired', (patch) => {
      if (first) {
        first = false;
        resolve();
        return;
      }
      report('desired', { patch });
    });
  });
  client.onDeviceMethod('echo', (request, response) => {
    report('method', { name: request.methodName, payload: request.payload });
    response.send(200, { echo: request.payload }, (err) => err && console.error(err));
  });
  client.on('message', (received) => {
    const properties = {};
    for (const item of received.properties.propertyList) properties[item.key] = item.value;
    report('message', { data: received.data.toString(), messageId: received.messageId, properties });
    client.complete(received, (err) => err && console.error(err));
  });
  report('listening', {});
  process.stdin.resume();
  process.stdin.on('end', async () => {
    await client.close();
    process.exit(0);
  });
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
