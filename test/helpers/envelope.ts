/** One gRPC / Connect streaming envelope: a flags byte, the length (big-endian), the message. */
export function envelope(flags: number, message: Uint8Array): Buffer {
  const out = Buffer.alloc(5 + message.length);
  out[0] = flags;
  out.writeUInt32BE(message.length, 1);
  out.set(message, 5);
  return out;
}
