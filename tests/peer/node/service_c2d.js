// Microsoft's Node.js service SDK (azure-iothub) sends a cloud-to-device message over AMQP and reads
// delivery feedback and file-upload notifications, as a back end against a real hub would.
// Arguments: the service connection string and the id of a connected device. Each step prints one
// JSON line {"step": ...}; the CA comes through NODE_EXTRA_CA_CERTS. Runs until stdin closes.
'use strict';
const { Client } = require('azure-iothub');
const { Message } = require('azure-iot-common');

function report(step, values) {
  process.stdout.write(JSON.stringify({ step, ...values }) + '\n');
}

function listen(receiver, step, field) {
  receiver.on('message', (message) => {
    report(step, { [field]: JSON.parse(message.getData().toString('utf-8')), contentType: message.contentType });
    receiver.complete(message, () => {});
  });
  receiver.on('error', (err) => report('receiver error', { error: String(err) }));
}

function receiver(get) {
  return new Promise((resolve, reject) => get((err, result) => (err ? reject(err) : resolve(result))));
}

async function main() {
  const [connectionString, deviceId] = process.argv.slice(2);
  const client = Client.fromConnectionString(connectionString);
  await client.open();
  listen(await receiver(client.getFeedbackReceiver.bind(client)), 'feedback', 'records');
  listen(await receiver(client.getFileNotificationReceiver.bind(client)), 'file notification', 'notification');
  report('receiving', {});

  const message = new Message(JSON.stringify({ command: 'on' }));
  message.messageId = 'node-c2d-1';
  message.correlationId = 'node-corr';
  message.contentType = 'application/json';
  message.contentEncoding = 'utf-8';
  message.ack = 'full';
  message.properties.add('room', 'hall');
  await client.send(deviceId, message);
  report('sent', {});
  try {
    await client.send('no-such-device', new Message('lost'));
    report('sent to nobody', {});
  } catch (err) {
    report('refused', { error: err.constructor.name });
  }
  process.stdin.on('end', () => client.close(() => process.exit(0)));
  process.stdin.resume();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
