"""kdb+ IPC: the wire protocol every pretrade process speaks, so any kdb+ client can talk to it.

Modules, one job each:
  codec     encode(obj) -> bytes / decode(buf) -> obj: q objects without the 8-byte header.
            Python  <-> q:  int <-> long, float <-> float, bool <-> boolean, str <-> symbol,
            bytes <-> char vector, None <-> (::), numpy arrays <-> vectors (object arrays of str
            <-> symbol vectors, datetime64[ns] <-> timestamp), list <-> general list,
            dict <-> dictionary, pandas.DataFrame <-> table, QError <-> error (-128).
  wire      the 8-byte header (endianness, message type, compression flag, length), kdb+ IPC
            decompression, handshake parsing. Message types: ASYNC=0, SYNC=1, RESPONSE=2.
  auth      the users file (config/users.toml, hashed passwords) and `pretrade users`.
  server    asyncio TCP server: handshake (refuses a wrong password as q does), framing,
            per-connection queues; hands each message's payload to a Handler.
  dispatch  a Handler that decodes a message and calls a registered function by name
            (`(`.u.sub; `trade; `)`), a registered expression string, or SQL (`s)...`);
            anything else answers q's 'nyi error.
  client    blocking client (handshake, sync query, async send, receive published messages).
"""
