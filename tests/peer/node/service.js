// Microsoft's Node.js service SDK (azure-iothub) against the emulator, as a user's script would run it.
// Arguments: the service connection string, a connected device's id and one of its modules' id.
// Each step prints one JSON line {"step": ...}; the CA comes through NODE_EXTRA_CA_CERTS.
'use strict';
const { Registry, Client } = require('azure-iothub');

function report(step, values) {
  process.stdout.write(JSON.stringify({ step, ...values }) + '\n');
}

async function main() {
  const [connectionString, deviceId, moduleId] = process.argv.slice(2);
  const registry = Registry.fromConnectionString(connectionString);
  const created = (await registry.create({ deviceId: 'node-created' })).responseBody;
  report('created', { deviceId: created.deviceId, status: created.status, primaryKey: created.authentication.symmetricKey.primaryKey });
  try {
    await registry.create({ deviceId: 'node-created' });
  } catch (err) {
    report('create again', { error: err.constructor.name });
  }
  const listed = (await registry.list()).responseBody;
  report('listed', { deviceIds: listed.map((device) => device.deviceId) });

  const twin = (await registry.getTwin(deviceId)).responseBody;
  report('twin', { reported: twin.properties.reported, etag: twin.etag });
  await twin.update({ tags: { site: 'n1' }, properties: { desired: { mode: 'eco' } } });
  report('twin updated', { tags: twin.tags, desired: twin.properties.desired });

  const client = Client.fromConnectionString(connectionString);
  const answer = await client.invokeDeviceMethod(deviceId, { methodName: 'echo', payload: { n: 2 }, responseTimeoutInSeconds: 10 });
  report('device method', { status: answer.result.status, payload: answer.result.payload });
  const moduleAnswer = await client.invokeDeviceMethod(deviceId, moduleId, { methodName: 'echo', payload: 'node', responseTimeoutInSeconds: 10 });
  report('module method', { status: moduleAnswer.result.status, payload: moduleAnswer.result.payload });

  await registry.delete('node-created');
  try {
    await registry.get('node-created');
  } catch (err) {
    report('deleted', { error: err.constructor.name });
  }
  process.exit(0);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
