"""kdb+ IPC: the wire protocol every pretrade process speaks, so any kdb+ client can talk to it.

Modules, one job each (docs/architecture.md, "kdb+ IPC", has the details):
  codec     encode(obj) -> bytes / decode(buf, offset) -> (obj, end) / loads(buf) -> obj:
            q objects without the 8-byte header. object_size(buf, offset): a record's length
            without decoding it. encode_row / encode_columns / encode_table: exact q types from
            schema.py's type characters. QError (q's errors), QRaw (pre-encoded bytes).
            Python  <-> q:  int <-> long, float <-> float, bool <-> boolean, str <-> symbol,
            bytes <-> char vector, None <-> (::), numpy arrays <-> vectors (object arrays of str
            <-> symbol vectors, datetime64[ns] <-> timestamp), list <-> general list,
            dict <-> dictionary, pandas.DataFrame <-> table, QError <-> error (-128).
  wire      the 8-byte header (endianness, message type, compression flag, length), kdb+ IPC
            compression, the handshake. Message types: ASYNC=0, SYNC=1, RESPONSE=2.
  auth      the users file (config/users.toml, scrypt-hashed passwords) and `pretrade users`.
  server    asyncio TCP server: handshake (refuses a wrong password as q does), framing,
            per-connection output bounds; hands each message's payload to a Handler
            (optional hooks: on_messages for batches of async messages, on_start, on_shutdown).
            BackgroundServer runs one on its own thread.
  dispatch  a Handler that decodes a message and calls a registered function by name
            (`(`.u.sub; `trade; `)` or `.u.sub[`trade;`]`), a registered expression string,
            or SQL (`s)...`); anything else answers q's 'nyi error.
  client    blocking client (handshake, sync query, async send, receive published messages).
"""
