import { parseStat } from './proc';

describe('/proc/<pid>/stat parsing', () => {
  it('reads the parent pid and utime + stime after the command name', () => {
    // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
    const line = '4242 (node) S 17 4242 4242 0 -1 4194560 9000 0 12 0 1234 567 0 0 20 0 11 0 99 1000 2000';
    expect(parseStat(line)).toEqual({ ppid: 17, ticks: 1234 + 567 });
  });

  it('copes with spaces and parentheses inside the command name', () => {
    const line = '7 (nginx: worker (x) ) S 6 6 6 0 -1 0 0 0 0 0 40 2 0 0 20 0 1 0 5 10 20';
    expect(parseStat(line)).toEqual({ ppid: 6, ticks: 42 });
  });

  it('refuses what is not a stat line', () => {
    expect(() => parseStat('garbage')).toThrow(/not a \/proc stat line/);
  });
});
