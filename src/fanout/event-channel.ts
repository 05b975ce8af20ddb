/**
 * A single-subscriber, bounded, pull-based channel between a run's producer
 * and the transport that streams it. `push` waits while the buffer holds more
 * than `maxBufferedBytes` (the producer then stops pulling lines from the
 * provider's pipe, which pauses the provider: no unbounded buffering, spec
 * §10 item 24). When the subscriber goes away, pushes are dropped at once so
 * the producer can finish its cleanup without waiting on anyone.
 */
export class EventChannel<T> {
  private readonly items: { value: T; bytes: number }[] = [];
  private bufferedBytes = 0;
  private ended = false;
  private cancelled = false;
  private takers: ((r: IteratorResult<T>) => void)[] = [];
  private spaceWaiters: (() => void)[] = [];
  private iterated = false;

  constructor(
    private readonly maxBufferedBytes: number,
    private readonly onCancel: () => void = () => {},
  ) {}

  /** True once the subscriber stopped reading (disconnect or early return). */
  get isCancelled(): boolean {
    return this.cancelled;
  }

  /** Deliver one item; resolves when the buffer has room again. */
  async push(value: T, bytes: number): Promise<void> {
    if (this.cancelled || this.ended) return;
    const taker = this.takers.shift();
    if (taker) {
      taker({ value, done: false });
      return;
    }
    this.items.push({ value, bytes });
    this.bufferedBytes += bytes;
    while (this.bufferedBytes > this.maxBufferedBytes && !this.cancelled) {
      await new Promise<void>((resolve) => this.spaceWaiters.push(resolve));
    }
  }

  /** No more items will be pushed; the subscriber drains what is buffered, then ends. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    for (const t of this.takers.splice(0)) t({ value: undefined, done: true });
  }

  private wakeProducers(): void {
    for (const w of this.spaceWaiters.splice(0)) w();
  }

  private cancel(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    this.items.length = 0;
    this.bufferedBytes = 0;
    this.wakeProducers();
    for (const t of this.takers.splice(0)) t({ value: undefined, done: true });
    this.onCancel();
  }

  /** The subscriber side. Iterate once; breaking out cancels the channel. */
  [Symbol.asyncIterator](): AsyncIterator<T> {
    if (this.iterated) throw new Error("EventChannel can be iterated only once.");
    this.iterated = true;
    return {
      next: () => {
        const item = this.items.shift();
        if (item) {
          this.bufferedBytes -= item.bytes;
          if (this.bufferedBytes <= this.maxBufferedBytes) this.wakeProducers();
          return Promise.resolve({ value: item.value, done: false });
        }
        if (this.ended || this.cancelled) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => this.takers.push(resolve));
      },
      return: () => {
        this.cancel();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }
}
