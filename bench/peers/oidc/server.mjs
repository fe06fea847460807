// oidc-provider as the side-by-side benchmark runs it: refresh-token rotation on,
// seeded with refresh tokens made through its own models, on a loopback port.
//
//   node server.mjs --port P --tokens N --out FILE [--store memory|postgres]
//                   [--pg URL --schema S] [--workers W]
//
// Writes the N starting refresh tokens to FILE, one a line, then prints "ready".
// Configuration (everything else is oidc-provider's default):
// - rotateRefreshToken: true. Presenting a consumed refresh token destroys it and
//   revokes its whole grant: oidc-provider's reuse protection, always on.
// - one public client "bench" (token_endpoint_auth_method "none"); the grants carry
//   "openid offline_access", so every refresh also signs an ID token, with an ES256 key
//   (keyturn signs an ES256 access token per rotation); access tokens stay opaque.
// - store "memory": oidc-provider's own MemoryAdapter, given an unbounded Map in place of
//   its default 1,000-entry LRU (a development cache that would evict the seeded tokens).
// - store "postgres": an adapter of this file on one jsonb table (PostgreSQL), so several
//   worker processes (node:cluster) share the state, as keyturn's workers do.
import cluster from 'node:cluster';
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';
import MemoryAdapter from 'oidc-provider/lib/adapters/memory_adapter.js';
import pg from 'pg';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '3000' },
    tokens: { type: 'string', default: '1000' },
    out: { type: 'string', default: 'tokens.txt' },
    store: { type: 'string', default: 'memory' },
    pg: { type: 'string', default: 'postgresql://root@127.0.0.1:5432/test' },
    schema: { type: 'string', default: 'bench_oidc' },
    workers: { type: 'string', default: '1' },
  },
});
const port = Number(args.port);
const workers = Number(args.workers);
const ISSUER = `http://127.0.0.1:${port}`;
const SCOPE = 'openid offline_access';
const USERS_PER_TOKEN = 4;

/** A Map with the get/set(maxAge)/delete surface MemoryAdapter expects of its store. */
class UnboundedStore {
  #entries = new Map();

  get(key) {
    const entry = this.#entries.get(key);
    if (entry === undefined) return undefined;
    if (entry.expiry !== undefined && entry.expiry <= Date.now()) {
      this.#entries.delete(key);
      return undefined;
    }
    return entry.value;
  }

  set(key, value, { maxAge } = {}) {
    const finite = typeof maxAge === 'number' && Number.isFinite(maxAge);
    this.#entries.set(key, { value, expiry: finite ? Date.now() + maxAge : undefined });
    return this;
  }

  delete(key) {
    return this.#entries.delete(key);
  }
}

const memory = new UnboundedStore();

class MapMemoryAdapter extends MemoryAdapter {
  constructor(model) {
    super(model, memory);
  }
}

let pool;
const table = () => `"${args.schema}".oidc_payloads`;

/** oidc-provider's adapter interface on one PostgreSQL table. */
class PostgresAdapter {
  constructor(model) {
    this.model = model;
  }

  async upsert(id, payload, expiresIn) {
    const expires = expiresIn ? new Date(Date.now() + expiresIn * 1000) : null;
    await pool.query(
      `INSERT INTO ${table()} (id, type, payload, grant_id, user_code, uid, expires_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7)
       ON CONFLICT (id, type) DO UPDATE SET payload = EXCLUDED.payload,
         grant_id = EXCLUDED.grant_id, user_code = EXCLUDED.user_code,
         uid = EXCLUDED.uid, expires_at = EXCLUDED.expires_at`,
      [id, this.model, payload, payload.grantId ?? null, payload.userCode ?? null,
        payload.uid ?? null, expires],
    );
  }

  async #one(where, value) {
    const { rows } = await pool.query(
      `SELECT payload, consumed_at FROM ${table()}
       WHERE ${where} = $1 AND type = $2 AND (expires_at IS NULL OR expires_at > now())`,
      [value, this.model],
    );
    if (rows.length === 0) return undefined;
    const [{ payload, consumed_at: consumedAt }] = rows;
    return consumedAt ? { ...payload, consumed: Math.floor(consumedAt / 1000) } : payload;
  }

  find(id) {
    return this.#one('id', id);
  }

  findByUid(uid) {
    return this.#one('uid', uid);
  }

  findByUserCode(userCode) {
    return this.#one('user_code', userCode);
  }

  async consume(id) {
    await pool.query(
      `UPDATE ${table()} SET consumed_at = now() WHERE id = $1 AND type = $2`,
      [id, this.model],
    );
  }

  async destroy(id) {
    await pool.query(`DELETE FROM ${table()} WHERE id = $1 AND type = $2`, [id, this.model]);
  }

  async revokeByGrantId(grantId) {
    await pool.query(`DELETE FROM ${table()} WHERE grant_id = $1`, [grantId]);
  }
}

async function createTable() {
  await pool.query(`CREATE SCHEMA IF NOT EXISTS "${args.schema}"`);
  await pool.query(`CREATE TABLE IF NOT EXISTS ${table()} (
    id text NOT NULL, type text NOT NULL, payload jsonb NOT NULL, grant_id text,
    user_code text, uid text, expires_at timestamptz, consumed_at timestamptz,
    PRIMARY KEY (id, type))`);
  await pool.query(`CREATE INDEX IF NOT EXISTS oidc_payloads_grant_id ON ${table()} (grant_id)`);
}

function signingKey() {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { ...privateKey.export({ format: 'jwk' }), alg: 'ES256', use: 'sig', kid: 'bench' };
}

function provider(key) {
  return new Provider(ISSUER, {
    adapter: args.store === 'postgres' ? PostgresAdapter : MapMemoryAdapter,
    clients: [{
      client_id: 'bench',
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: ['http://127.0.0.1/cb'],
      id_token_signed_response_alg: 'ES256',
    }],
    jwks: { keys: [key] },
    cookies: { keys: ['keyturn-bench-cookie-key'] },
    findAccount: async (ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
    rotateRefreshToken: true,
    ttl: { AccessToken: 900, IdToken: 900, RefreshToken: 14 * 86400, Grant: 30 * 86400 },
    features: { devInteractions: { enabled: false } },
  });
}

async function seed(op, count) {
  const client = await op.Client.find('bench');
  const now = Math.floor(Date.now() / 1000);
  const tokens = [];
  for (let i = 0; i < count; i += 1) {
    const accountId = `user-${Math.floor(i / USERS_PER_TOKEN)}`;
    const grant = new op.Grant({ accountId, clientId: 'bench' });
    grant.addOIDCScope(SCOPE);
    const grantId = await grant.save();
    const token = new op.RefreshToken({
      accountId, client, grantId, scope: SCOPE, gty: 'authorization_code', iiat: now, authTime: now,
    });
    tokens.push(await token.save());
  }
  return tokens;
}

function connect() {
  pool = new pg.Pool({ connectionString: args.pg, max: 10 });
}

if (cluster.isPrimary) {
  const key = signingKey();
  if (args.store === 'postgres') {
    connect();
    await createTable();
  } else if (workers !== 1) {
    throw new Error('the memory store lives in one process: --workers 1');
  }
  const op = provider(key);
  const tokens = await seed(op, Number(args.tokens));
  writeFileSync(args.out, `${tokens.join('\n')}\n`);
  if (args.store === 'postgres') {
    await pool.query(`ANALYZE ${table()}`);
  }
  if (workers === 1) {
    op.listen(port, '127.0.0.1', () => console.log('ready'));
  } else {
    let listening = 0;
    cluster.on('listening', () => {
      listening += 1;
      if (listening === workers) console.log('ready');
    });
    cluster.on('exit', (worker, code) => console.error(`worker ${worker.process.pid} exited ${code}`));
    for (let w = 0; w < workers; w += 1) {
      cluster.fork({ BENCH_OIDC_KEY: JSON.stringify(key) });
    }
    const stop = () => {
      for (const worker of Object.values(cluster.workers)) worker.kill();
      process.exit(0);
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  }
} else {
  connect();
  provider(JSON.parse(process.env.BENCH_OIDC_KEY)).listen(port, '127.0.0.1');
}
