// A lying peer on ron's network, driven by engine/tests/replication_liar.rs: a stock
// js-libp2p node (TCP + noise + yamux, identify, ping, Kademlia on /ron/kad/1.0.0 as a
// server) that also speaks ron's own protocols and lies about holding objects.
//
//   node liar_peer.mjs --bootstrap /ip4/127.0.0.1/tcp/P/p2p/ID [--bootstrap ...]
//                      --zone NAME --oap-port N [--timeout <seconds>]
//   node liar_peer.mjs --codec-check JSON
//
// - /ron/provide/2 (dht/src/protocol.rs): on every connection it dials it sends the
//   greeting (no keys) with its real libp2p listen port, the OAP port it claims
//   (--oap-port, where nothing serves OAP/1: audits of it fail) and --zone; it answers
//   every request ron sends it (greetings and batches of keys) with the same, and
//   `stored` = the number of keys (it stores nothing).
// - /ron/replicate/1 (dht/src/replicate.rs): it answers `held` for every address asked,
//   having fetched nothing.
// Both are one message per stream, delimited by the end of the stream (dht/src/wire.rs:
// no length prefix; the writer closes its sending side).
//
// One JSON line per event on stdout: {"step":"started",...}, "dialed", "greeted" (a
// greeting's response arrived: the ron node's ports and zone), "provide_in" (a request
// it answered), "asked" (a /ron/replicate/1 request answered `held`, with the addresses
// in hex), "greeting_failed"/"inbound_failed" (not fatal); a failed start prints
// {"step":"error",...} and exits 1. It stays up until stdin closes or --timeout seconds
// passed since start, whichever first.
//
// --codec-check JSON checks the codecs against ron's without a network: JSON holds
// messages ron's own encoders wrote (hex: "provide_request", "provide_response",
// "replicate_request") and what to encode ("ports", "zone", "stored", "outcomes"); it
// prints one {"step":"codec",...} line with what it decoded and what it encodes, and
// exits.

import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { kadDHT, passthroughMapper } from '@libp2p/kad-dht'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'

// As in kad_peer.mjs: Node 20 lacks Promise.withResolvers, which libp2p 2.x reaches.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve, reject
    const promise = new this((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}

const KAD_PROTOCOL = '/ron/kad/1.0.0'
const PROVIDE_PROTOCOL = '/ron/provide/2'
const REPLICATE_PROTOCOL = '/ron/replicate/1'
// dht/src/protocol.rs and dht/src/store.rs.
const PROVIDE_VERSION = 2
const ZONE_BYTES_MAX = 64
const PROVIDE_KEYS_MAX = 4096
const RECORD_KEY_BYTES_MAX = 64
const PROVIDE_MESSAGE_BYTES_MAX = 8 + ZONE_BYTES_MAX + PROVIDE_KEYS_MAX * (1 + RECORD_KEY_BYTES_MAX)
// dht/src/replicate.rs.
const REPLICATE_VERSION = 1
const REPLICATE_KEYS_MAX = 256
const REPLICATE_MESSAGE_BYTES_MAX = 5 + REPLICATE_KEYS_MAX * 32
const OUTCOMES = ['held', 'not_holder', 'failed', 'busy', 'pending']
const HELD = 0
// How long one stream may take, and a dial.
const STREAM_MS = 10_000
const STEP_MS = 20_000

function emit (line) {
  process.stdout.write(JSON.stringify(line) + '\n')
}

function isZoneName (zone) {
  return Buffer.byteLength(zone) <= ZONE_BYTES_MAX && /^[A-Za-z0-9._-]*$/.test(zone)
}

function u16 (n) {
  const out = Buffer.alloc(2)
  out.writeUInt16BE(n)
  return out
}

// --- /ron/provide/2 ---------------------------------------------------------------

// version 2 ‖ p2p port u16 ‖ OAP port u16 ‖ zone length u8 ‖ zone
function provideHead ({ p2p, oap }, zone) {
  if (!isZoneName(zone)) throw new Error(`not a zone name: ${zone}`)
  const z = Buffer.from(zone, 'ascii')
  return Buffer.concat([Buffer.from([PROVIDE_VERSION]), u16(p2p), u16(oap), Buffer.from([z.length]), z])
}

// head ‖ key count u16 ‖ per key: length u8 ‖ bytes
function encodeProvideRequest (ports, zone, keys = []) {
  if (keys.length > PROVIDE_KEYS_MAX) throw new Error('too many keys')
  const parts = [provideHead(ports, zone), u16(keys.length)]
  for (const key of keys) {
    if (key.length > RECORD_KEY_BYTES_MAX) throw new Error('key too long')
    parts.push(Buffer.from([key.length]), Buffer.from(key))
  }
  return Buffer.concat(parts)
}

// head ‖ stored u16
function encodeProvideResponse (ports, zone, stored) {
  return Buffer.concat([provideHead(ports, zone), u16(Math.min(stored, 0xffff))])
}

// The head and the count, as ron's `greeting_and_count` reads them.
function decodeProvideHead (message) {
  if (message.length < 6) throw new Error('short message')
  if (message[0] !== PROVIDE_VERSION) throw new Error('unknown version')
  const ports = { p2p: message.readUInt16BE(1), oap: message.readUInt16BE(3) }
  const zoneEnd = 6 + message[5]
  if (message.length < zoneEnd) throw new Error('short message')
  const zone = message.subarray(6, zoneEnd).toString('latin1')
  if (!isZoneName(zone)) throw new Error('not a zone name')
  if (message.length < zoneEnd + 2) throw new Error('short message')
  return { ports, zone, count: message.readUInt16BE(zoneEnd), rest: message.subarray(zoneEnd + 2) }
}

function decodeProvideRequest (message) {
  const { ports, zone, count, rest } = decodeProvideHead(message)
  if (count > PROVIDE_KEYS_MAX) throw new Error('too many keys')
  const keys = []
  let at = 0
  for (let i = 0; i < count; i++) {
    if (at >= rest.length) throw new Error('short key')
    const len = rest[at]
    if (len > RECORD_KEY_BYTES_MAX) throw new Error('key too long')
    if (at + 1 + len > rest.length) throw new Error('short key')
    keys.push(rest.subarray(at + 1, at + 1 + len))
    at += 1 + len
  }
  if (at !== rest.length) throw new Error('bytes after the last key')
  return { ports, zone, keys }
}

function decodeProvideResponse (message) {
  const { ports, zone, count, rest } = decodeProvideHead(message)
  if (rest.length !== 0) throw new Error('bytes after the response')
  return { ports, zone, stored: count }
}

// --- /ron/replicate/1 -------------------------------------------------------------

// version 1 ‖ OAP port u16 ‖ count u16 ‖ count × 32-byte address
function decodeReplicateRequest (message) {
  if (message.length < 5) throw new Error('short message')
  if (message[0] !== REPLICATE_VERSION) throw new Error('unknown version')
  const oap = message.readUInt16BE(1)
  const count = message.readUInt16BE(3)
  if (count > REPLICATE_KEYS_MAX) throw new Error('too many addresses')
  const rest = message.subarray(5)
  if (rest.length !== count * 32) throw new Error('addresses do not match their count')
  const addrs = []
  for (let i = 0; i < count; i++) addrs.push(rest.subarray(i * 32, i * 32 + 32).toString('hex'))
  return { oap, addrs }
}

// version 1 ‖ count u16 ‖ count × outcome u8 (0 held, 1 not a holder, 2 failed, 3 busy,
// 4 pending)
function encodeReplicateResponse (outcomes) {
  if (outcomes.length > REPLICATE_KEYS_MAX) throw new Error('too many addresses')
  return Buffer.concat([Buffer.from([REPLICATE_VERSION]), u16(outcomes.length), Buffer.from(outcomes)])
}

// --- streams ----------------------------------------------------------------------

// The whole message: everything until the other side closes its sending side, at most
// `max` bytes (as dht/src/wire.rs reads), within STREAM_MS.
async function readMessage (stream, max) {
  const signal = AbortSignal.timeout(STREAM_MS)
  const onAbort = () => stream.abort(new Error(`no whole message within ${STREAM_MS} ms`))
  signal.addEventListener('abort', onAbort)
  try {
    const chunks = []
    let length = 0
    for await (const chunk of stream.source) {
      length += chunk.byteLength
      if (length > max) throw new Error('message too long')
      chunks.push(chunk.subarray())
    }
    return Buffer.concat(chunks)
  } finally {
    signal.removeEventListener('abort', onAbort)
  }
}

// Writes the message and closes the sending side (its end delimits it).
async function writeMessage (stream, message) {
  await stream.sink([message])
}

function parseArgs (argv) {
  const args = { bootstrap: [], zone: null, oapPort: null, timeout: 120, codecCheck: null }
  for (let i = 0; i < argv.length; i++) {
    const value = argv[i + 1]
    switch (argv[i]) {
      case '--bootstrap': args.bootstrap.push(value); i++; break
      case '--zone': args.zone = value; i++; break
      case '--oap-port': args.oapPort = Number(value); i++; break
      case '--timeout': args.timeout = Number(value); i++; break
      case '--codec-check': args.codecCheck = value; i++; break
      default: throw new Error(`unknown argument ${argv[i]}`)
    }
  }
  if (args.codecCheck != null) return args
  if (args.bootstrap.length === 0 || args.zone == null || args.oapPort == null) {
    throw new Error('usage: liar_peer.mjs --bootstrap MULTIADDR... --zone NAME --oap-port N [--timeout S]')
  }
  if (!isZoneName(args.zone)) throw new Error(`--zone: not a zone name: ${args.zone}`)
  if (!(Number.isInteger(args.oapPort) && args.oapPort > 0 && args.oapPort <= 0xffff)) {
    throw new Error(`--oap-port: not a port: ${args.oapPort}`)
  }
  if (!(args.timeout > 0)) {
    throw new Error(`--timeout: not a positive number of seconds: ${args.timeout}`)
  }
  return args
}

// Decodes what ron's encoders wrote and encodes what the liar sends, for the test to
// decode with ron's decoders.
function codecCheck (json) {
  const given = JSON.parse(json)
  const hex = (h) => Buffer.from(h, 'hex')
  const request = decodeProvideRequest(hex(given.provide_request))
  const response = decodeProvideResponse(hex(given.provide_response))
  emit({
    step: 'codec',
    decoded: {
      provide_request: { ...request, keys: request.keys.map(k => k.toString('hex')) },
      provide_response: response,
      replicate_request: decodeReplicateRequest(hex(given.replicate_request))
    },
    encoded: {
      greeting: encodeProvideRequest(given.ports, given.zone).toString('hex'),
      provide_response: encodeProvideResponse(given.ports, given.zone, given.stored).toString('hex'),
      replicate_response: encodeReplicateResponse(given.outcomes.map(o => OUTCOMES.indexOf(o))).toString('hex')
    }
  })
}

async function run (args, node) {
  let ports = null
  const me = () => ports

  // Answers every /ron/provide/2 request: its ports and zone, and every key "stored".
  await node.handle(PROVIDE_PROTOCOL, async ({ stream, connection }) => {
    const peer = connection.remotePeer.toString()
    try {
      const request = decodeProvideRequest(await readMessage(stream, PROVIDE_MESSAGE_BYTES_MAX))
      await writeMessage(stream, encodeProvideResponse(me(), args.zone, request.keys.length))
      emit({ step: 'provide_in', peer, zone: request.zone, ports: request.ports, keys: request.keys.length })
    } catch (err) {
      emit({ step: 'inbound_failed', protocol: PROVIDE_PROTOCOL, peer, message: String(err?.message ?? err) })
      stream.abort(err)
    }
  }, { maxInboundStreams: 256 })

  // The lie: `held` for every address, nothing fetched.
  await node.handle(REPLICATE_PROTOCOL, async ({ stream, connection }) => {
    const peer = connection.remotePeer.toString()
    try {
      const request = decodeReplicateRequest(await readMessage(stream, REPLICATE_MESSAGE_BYTES_MAX))
      await writeMessage(stream, encodeReplicateResponse(request.addrs.map(() => HELD)))
      emit({ step: 'asked', peer, oap: request.oap, addrs: request.addrs, answered: 'held' })
    } catch (err) {
      emit({ step: 'inbound_failed', protocol: REPLICATE_PROTOCOL, peer, message: String(err?.message ?? err) })
      stream.abort(err)
    }
  }, { maxInboundStreams: 256 })

  // The greeting, on every connection this node dials (as a ron node does).
  const greet = async (connection) => {
    const peer = connection.remotePeer.toString()
    try {
      const stream = await connection.newStream(PROVIDE_PROTOCOL, { signal: AbortSignal.timeout(STREAM_MS) })
      await writeMessage(stream, encodeProvideRequest(me(), args.zone))
      const response = decodeProvideResponse(await readMessage(stream, PROVIDE_MESSAGE_BYTES_MAX))
      emit({ step: 'greeted', peer, zone: response.zone, ports: response.ports, stored: response.stored })
    } catch (err) {
      emit({ step: 'greeting_failed', peer, message: String(err?.message ?? err) })
    }
  }
  node.addEventListener('connection:open', (evt) => {
    if (evt.detail.direction === 'outbound' && ports != null) greet(evt.detail)
  })

  await node.start()
  const listen = node.getMultiaddrs()
  const p2p = listen.map(a => a.toOptions()).find(o => o.transport === 'tcp')?.port
  if (p2p == null) throw new Error(`no TCP listen address: ${listen.map(String)}`)
  ports = { p2p, oap: args.oapPort }
  emit({
    step: 'started',
    peer_id: node.peerId.toString(),
    listen: listen.map(String),
    ports,
    zone: args.zone
  })

  for (const text of args.bootstrap) {
    const connection = await node.dial(multiaddr(text), { signal: AbortSignal.timeout(STEP_MS) })
    emit({ step: 'dialed', peer: connection.remotePeer.toString(), addr: text })
  }
}

async function main () {
  let args
  try {
    args = parseArgs(process.argv.slice(2))
  } catch (err) {
    emit({ step: 'error', message: err.message })
    process.exit(2)
  }
  if (args.codecCheck != null) {
    // No network and nothing left to wait for: the process ends once stdout is written.
    try {
      codecCheck(args.codecCheck)
    } catch (err) {
      emit({ step: 'error', message: String(err?.stack ?? err) })
      process.exitCode = 1
    }
    return
  }

  const node = await createLibp2p({
    start: false,
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: {
      identify: identify(),
      ping: ping(),
      dht: kadDHT({
        protocol: KAD_PROTOCOL,
        // A server: ron's lookups find it, so its placements can name it.
        clientMode: false,
        // Every address here is loopback, which the default mapper drops.
        peerInfoMapper: passthroughMapper,
        initialQuerySelfInterval: 500,
        querySelfInterval: 600_000
      })
    }
  })

  let exiting = false
  const exit = async (code) => {
    if (exiting) return
    exiting = true
    await Promise.race([
      node.stop().catch(() => {}),
      new Promise(resolve => setTimeout(resolve, 2_000))
    ])
    process.exit(code)
  }
  // Whatever happens, the process ends by itself: at stdin's end or the hard timeout.
  setTimeout(() => { emit({ step: 'timeout', seconds: args.timeout }); exit(0) }, args.timeout * 1_000)
  process.stdin.on('end', () => exit(0))
  process.stdin.on('error', () => exit(0))
  process.stdin.resume()

  try {
    await run(args, node)
    emit({ step: 'waiting' })
  } catch (err) {
    emit({ step: 'error', message: String(err?.stack ?? err) })
    await exit(1)
  }
}

main().catch((err) => {
  emit({ step: 'error', message: String(err?.stack ?? err) })
  process.exit(1)
})
