import { EventEmitter } from 'node:events';
import { standIn } from './express-adapter';

class Base extends EventEmitter {
  readonly field: number;
  constructor(n: number) {
    super();
    this.field = n;
  }
}

describe('standIn', () => {
  const methods = Object.create(Base.prototype, { extra: { value: () => 'extra' } }) as object;
  const Sub = standIn(Base, methods);

  it("builds the base's objects, its constructor run, on a prototype that inherits the given one", () => {
    const o = new Sub(7);
    expect(o.field).toBe(7);
    expect(o).toBeInstanceOf(Base);
    expect(Object.getPrototypeOf(Object.getPrototypeOf(o))).toBe(methods);
    expect((o as unknown as { extra(): string }).extra()).toBe('extra');
  });

  it("keeps the base's name", () => {
    expect(Sub.name).toBe('Base');
    expect(new Sub(1).constructor.name).toBe('Base');
  });
});
