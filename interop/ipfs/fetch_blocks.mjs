// Fetches raw blocks by CID with @helia/verified-fetch, which gets each block from the
// trustless gateway given and checks it against its CID's multihash (BLAKE3 here,
// hasher from @noble/hashes) before returning a byte. One JSON line per CID on stdout:
// {"step":"fetched","cid","status","bytes","blake3","content_type"} or
// {"step":"failed","cid","status"?,"error"}. Used by engine/tests/ipfs_gateway.rs.
//
// usage: node fetch_blocks.mjs <gateway url> <cid>...
import { fallbackRouter } from '@helia/fallback-router'
import { trustlessGatewayBlockBroker } from '@helia/trustless-gateway-client'
import { createVerifiedFetch } from '@helia/verified-fetch'
import { createHeliaLight } from 'helia'
import { blake3 } from '@noble/hashes/blake3.js'
import { bytesToHex } from '@noble/hashes/utils.js'
import { from } from 'multiformats/hashes/hasher'

const [gateway, ...cids] = process.argv.slice(2)
// Bounded: the whole run ends by itself. The timer also keeps the event loop alive while
// a fetch waits on providers Helia will never find (its abort signal's timer does not).
setTimeout(() => { console.log(JSON.stringify({ step: 'error', error: 'timed out' })); process.exit(3) }, 90_000)

const blake3Hasher = from({ name: 'blake3', code: 0x1e, encode: (bytes) => blake3(bytes) })
// The gateway as Helia's one content router. Helia 7.1 asks fallback routers only after
// its other routers finish, and with none its wait never ends: so the fallback router
// that names a gateway is made an ordinary one.
function gatewayRouter (url) {
  const router = fallbackRouter({ gateways: [url], shuffle: false })
  router.capabilities = () => []
  return router
}

// Helia without libp2p: blocks come from the trustless gateway given and nowhere else
// (it is a node on loopback over plain HTTP: local and insecure allowed).
const helia = createHeliaLight({
  hashers: [blake3Hasher],
  blockBrokers: [trustlessGatewayBlockBroker({ allowLocal: true, allowInsecure: true })],
  routers: [gatewayRouter(gateway)]
})
await helia.start()
const verifiedFetch = await createVerifiedFetch(helia)

for (const cid of cids) {
  try {
    const res = await verifiedFetch(`ipfs://${cid}`, {
      headers: { accept: 'application/vnd.ipld.raw' },
      signal: AbortSignal.timeout(10_000)
    })
    const body = new Uint8Array(await res.arrayBuffer())
    if (res.status !== 200) {
      console.log(JSON.stringify({ step: 'failed', cid, status: res.status, error: new TextDecoder().decode(body).slice(0, 300) }))
      continue
    }
    console.log(JSON.stringify({
      step: 'fetched',
      cid,
      status: res.status,
      bytes: body.length,
      blake3: bytesToHex(blake3(body)),
      content_type: res.headers.get('content-type')
    }))
  } catch (e) {
    console.log(JSON.stringify({ step: 'failed', cid, error: String(e?.message ?? e).slice(0, 300) }))
  }
}
await verifiedFetch.stop()
await helia.stop()
process.exit(0)
