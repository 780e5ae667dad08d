import { waitFigures } from './waits';

describe('waitFigures', () => {
  it('judges the estimate by its median absolute error against the median actual wait, over waits long enough to judge', () => {
    const f = waitFigures([
      { at: 0, position: 10, etaMs: 10_000, waitedMs: 9_000 },
      { at: 1, position: 20, etaMs: 20_000, waitedMs: 24_000 },
      { at: 2, position: 30, etaMs: 30_000, waitedMs: 30_500 },
      // Too short to judge, and one without an estimate: counted, not judged.
      { at: 3, position: 1, etaMs: 5_000, waitedMs: 20 },
      { at: 4, position: 5, etaMs: null, waitedMs: 4_000 },
    ]);
    expect(f.count).toBe(5);
    expect(f.estimated).toBe(3);
    // |errors| 1,000, 4,000, 500 -> median 1,000; actual 9,000, 24,000, 30,500 -> median 24,000.
    expect(f.etaMedianAbsErrorMs).toBe(1_000);
    expect(f.etaMedianAbsErrorShare).toBeCloseTo(1_000 / 24_000, 3);
    expect(f.etaMedianRelativeError).toBeCloseTo(1 / 9, 3);
    expect(f.waitedMax).toBe(30_500);
  });

  it('says nothing it does not know', () => {
    expect(waitFigures([])).toMatchObject({ count: 0, waitedP50: null, estimated: 0, etaMedianAbsErrorMs: null, etaMedianAbsErrorShare: null });
  });
});
