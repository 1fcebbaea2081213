// A stock js-libp2p peer on ron's DHT, driven by engine/tests/libp2p_interop.rs.
//
//   node kad_peer.mjs --bootstrap /ip4/127.0.0.1/tcp/P/p2p/ID [--bootstrap ...]
//                     --find <b3 hex> --provide <b3 hex> [--timeout <seconds>]
//                     [--claim <multiaddr>] [--network-key <swarm.key file>]
//
// It dials the bootstrap peers (TCP + noise + yamux), waits for their identify answers,
// pings them, waits until they are in its Kademlia routing table, looks up the
// providers of --find (and the addresses peers hand out for them), provides --provide
// (its records and identify answers also claiming --claim, an address it does not listen
// on), then stays up (so ron can reach it) until
// stdin closes or --timeout seconds have passed since start. One JSON line per step on
// stdout; a failed step prints {"step":"error",...} and exits 1. With --network-key,
// every connection is protected by that private network's pre-shared key (@libp2p/pnet,
// the swarm.key format), as ron's --p2p-network-key. libp2p's own logs go
// to stderr with DEBUG=libp2p:* as usual.

import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { kadDHT, passthroughMapper } from '@libp2p/kad-dht'
import { ping } from '@libp2p/ping'
import { preSharedKey } from '@libp2p/pnet'
import { tcp } from '@libp2p/tcp'
import { multiaddr } from '@multiformats/multiaddr'
import { readFileSync } from 'node:fs'
import { createLibp2p } from 'libp2p'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'

// Node 20 has no Promise.withResolvers (Node 22 does), which libp2p 2.x's peer store
// reaches through a dependency resolved within its semver range (it-queue, under
// mortice); it is called, never evaluated at import, so defining it here is in time.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve, reject
    const promise = new this((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}

// ron's DHT is its own network, not the IPFS one.
const KAD_PROTOCOL = '/ron/kad/1.0.0'
// Multicodecs: BLAKE3 (32-byte digest) and the raw-bytes content type.
const BLAKE3 = 0x1e
const RAW = 0x55
// How long each network step may take.
const STEP_MS = 20_000

function emit (line) {
  process.stdout.write(JSON.stringify(line) + '\n')
}

function parseArgs (argv) {
  const args = { bootstrap: [], find: null, provide: null, timeout: 60, claim: [], networkKey: null }
  for (let i = 0; i < argv.length; i++) {
    const value = argv[i + 1]
    switch (argv[i]) {
      case '--bootstrap': args.bootstrap.push(value); i++; break
      case '--find': args.find = value; i++; break
      case '--provide': args.provide = value; i++; break
      case '--timeout': args.timeout = Number(value); i++; break
      case '--claim': args.claim.push(value); i++; break
      case '--network-key': args.networkKey = value; i++; break
      default: throw new Error(`unknown argument ${argv[i]}`)
    }
  }
  if (args.bootstrap.length === 0 || args.find == null || args.provide == null) {
    throw new Error('usage: kad_peer.mjs --bootstrap MULTIADDR... --find HEX --provide HEX [--timeout S]')
  }
  if (!(args.timeout > 0)) {
    throw new Error(`--timeout: not a positive number of seconds: ${args.timeout}`)
  }
  return args
}

// ron's object address `b3:<hex>` as the CID naming the same DHT key: CIDv1, raw codec,
// multihash 0x1e 0x20 ‖ digest — Kademlia keys by the multihash bytes alone.
function cidOf (hex) {
  if (!/^[0-9a-f]{64}$/.test(hex)) {
    throw new Error(`not 64 lowercase hex digits (a b3 address without "b3:"): ${hex}`)
  }
  return CID.createV1(RAW, Digest.create(BLAKE3, Uint8Array.from(Buffer.from(hex, 'hex'))))
}

// Polls `check` every 100 ms until it returns something truthy; throws past `ms`.
async function waitFor (what, ms, check) {
  const deadline = Date.now() + ms
  for (;;) {
    const got = await check()
    if (got) return got
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}

async function run (args, node) {
  const dht = node.services.dht
  const identified = new Map()
  node.addEventListener('peer:identify', (evt) => {
    identified.set(evt.detail.peerId.toString(), evt.detail)
  })
  await node.start()
  emit({
    step: 'started',
    peer_id: node.peerId.toString(),
    listen: node.getMultiaddrs().map(String),
    mode: dht.getMode()
  })

  const bootstrap = []
  for (const text of args.bootstrap) {
    const connection = await node.dial(multiaddr(text), { signal: AbortSignal.timeout(STEP_MS) })
    bootstrap.push(connection.remotePeer)
    emit({ step: 'dialed', peer: connection.remotePeer.toString(), addr: text })
  }

  for (const peer of bootstrap) {
    const id = peer.toString()
    const info = await waitFor(`identify of ${id}`, STEP_MS, () => identified.get(id))
    emit({
      step: 'identify',
      peer: id,
      agent: info.agentVersion ?? null,
      protocol_version: info.protocolVersion ?? null,
      kad: info.protocols.includes(KAD_PROTOCOL),
      protocols: info.protocols
    })
  }

  // A peer is added once identify says it speaks KAD_PROTOCOL and it answers a ping.
  // `find` is the routing table's own lookup (the typed interface exposes `size`).
  const inTable = async () => {
    const ids = []
    for (const peer of bootstrap) {
      if (await dht.routingTable.find(peer) != null) ids.push(peer.toString())
    }
    return ids
  }
  const ids = await waitFor('a bootstrap peer in the routing table', STEP_MS, async () => {
    const found = await inTable()
    return found.length > 0 ? found : null
  })
  emit({ step: 'routing', peers: dht.routingTable.size, ron_peers: ids })

  // Pinged only now: the routing table pinged each new contact before adding it, and
  // rust-libp2p's ping answers one ping stream per connection at a time (a second one
  // at once resets the first, and the routing table then drops the contact).
  for (const peer of bootstrap) {
    const rtt = await node.services.ping.ping(peer, { signal: AbortSignal.timeout(STEP_MS) })
    emit({ step: 'ping', peer: peer.toString(), rtt_ms: rtt })
  }

  const wanted = cidOf(args.find)
  const found = new Set()
  const addrs = {}
  for await (const event of dht.findProviders(wanted, { signal: AbortSignal.timeout(STEP_MS) })) {
    if (event.name === 'PROVIDER') {
      for (const provider of event.providers) {
        const id = provider.id.toString()
        found.add(id)
        addrs[id] = [...new Set([...(addrs[id] ?? []), ...provider.multiaddrs.map(String)])]
      }
    }
  }
  emit({ step: 'providers', cid: wanted.toString(), found: [...found], addrs })

  const offered = cidOf(args.provide)
  const sentTo = new Set()
  for await (const event of dht.provide(offered, { signal: AbortSignal.timeout(STEP_MS) })) {
    if (event.name === 'PEER_RESPONSE' && event.messageName === 'ADD_PROVIDER') {
      sentTo.add(event.from.toString())
    }
  }
  if (sentTo.size === 0) throw new Error('provide: no peer took the provider record')
  emit({
    step: 'provided',
    peer_id: node.peerId.toString(),
    cid: offered.toString(),
    sent_to: [...sentTo]
  })
}

async function main () {
  let args
  try {
    args = parseArgs(process.argv.slice(2))
  } catch (err) {
    emit({ step: 'error', message: err.message })
    process.exit(2)
  }

  const node = await createLibp2p({
    start: false,
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'], appendAnnounce: args.claim },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    ...(args.networkKey == null
      ? {}
      : { connectionProtector: preSharedKey({ psk: readFileSync(args.networkKey) }) }),
    services: {
      identify: identify(),
      ping: ping(),
      dht: kadDHT({
        protocol: KAD_PROTOCOL,
        // A server: it answers Kademlia requests and so is worth a routing table entry.
        clientMode: false,
        // The default drops private addresses, and every address here is loopback.
        peerInfoMapper: passthroughMapper,
        // ron nodes only: no periodic self-query/refresh traffic during the test.
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
