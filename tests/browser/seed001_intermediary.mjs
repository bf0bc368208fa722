// An intermediary written as seed 001's JavaScript example is: socket.io-client
// 4 connecting to `${SERVER_URL}/proxy` with proxyId and apiKey in the
// handshake query, default transports (long-polling, then the upgrade to
// WebSocket). It answers each execute_command with a made-up result (it
// runs nothing). One JSON line per event on stdout.
import { io } from 'socket.io-client';

const config = {
  serverUrl: process.env.SERVER_URL,
  proxyId: process.env.PROXY_ID,
  apiKey: process.env.API_KEY,
};
const say = (obj) => console.log(JSON.stringify(obj));

const socket = io(`${config.serverUrl}/proxy`, {
  query: { proxyId: config.proxyId, apiKey: config.apiKey },
  reconnection: false,
});

socket.on('connect', () => {
  say({ connected: true });
  // The upgrade from polling may have happened already.
  const engine = socket.io.engine;
  if (engine.transport.name === 'websocket') say({ upgraded: 'websocket' });
  else engine.once('upgrade', (t) => say({ upgraded: t.name }));
});
socket.on('connect_error', (err) => {
  say({ connect_error: err.message });
  process.exit(0);
});
socket.on('execute_command', async (data) => {
  const { password, privateKey, ...shown } = data;
  say({ execute_command: shown, has_password: password !== undefined });
  socket.emit('command_result', {
    commandId: data.commandId,
    result: { stdout: `ran ${data.command}`, stderr: '', exitCode: 0 },
  });
});
socket.on('command_result_received', (data) => say({ command_result_received: data }));
socket.on('disconnect', (reason) => {
  say({ disconnected: reason });
  process.exit(0);
});
