// Example iii worker on Bun (the Node SDK runs unchanged under bun): registers
// `examples::greet` and serves it until SIGTERM.
// The sandbox sets III_URL (the engine) and III_WORKER_NAME.
import { registerWorker } from 'iii-sdk'

const iii = registerWorker(process.env.III_URL ?? 'ws://127.0.0.1:49134', {
  workerName: process.env.III_WORKER_NAME ?? 'bun-worker',
})

iii.registerFunction('examples::greet', async (input: { name?: string } | undefined) => {
  const greeting = process.env.GREETING ?? 'Hello'
  return { message: `${greeting}, ${input?.name ?? 'world'}!` }
})

console.log('bun-worker: registered examples::greet')

const stop = async () => {
  console.log('bun-worker: stopping')
  await iii.shutdown()
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
