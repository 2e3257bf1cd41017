// The second real program: memcached 1.6 from Debian's sources, a
// multi-threaded server (worker threads in epoll_wait, maintenance threads
// in condition waits and sleeps). Built at -O2 and at -O1 by
// scripts/build-memcached.sh; the running -O2 server has nearly every function
// replaced by its -O1 build while clients talk to it, and must keep its items.
import * as path from 'path';
import { hotload, sleep, tmpdir } from './helpers';
import { Client, memcachedBuilds, startMemcached } from './memcached-client';

test('memcached: nearly every function of the running -O2 server replaced by its -O1 build while clients work; every item and counter carries on', async () => {
  const { o2, o1 } = memcachedBuilds();
  const server = path.join(o2, 'memcached');
  const { t, sock } = await startMemcached(server);
  let hammer: Promise<{ rounds: number; bad: string[] }> | undefined;
  let stop = false;
  try {
    const c = await Client.connect(sock);
    for (let i = 0; i < 200; i++) expect(await c.set(`k${i}`, `before-${i}`)).toBe('STORED\r\n');
    expect(await c.set('n', '5')).toBe('STORED\r\n');
    for (let i = 0; i < 50; i++) await c.cmd('incr n 3\r\n');
    expect(await c.get('n')).toBe('155');
    const s0 = await c.stats();

    const out = path.join(tmpdir(), 'mc-O1.so');
    const mk = await hotload(['mkpatch', '--from', o2, '--to', o1, '--target', server, '-o', out, '--json']);
    if (mk.code !== 0) throw new Error(`mkpatch exited ${mk.code}:\n${mk.stderr}\n${mk.stdout}`);
    expect(mk.json.replaced.length).toBeGreaterThan(250);
    expect(mk.json.replaced).toEqual(expect.arrayContaining(['drive_machine@memcached.c', 'process_command_ascii', 'do_item_alloc', 'assoc_find']));
    // The advice about gcc's clones (process_command_ascii.part.0 ...) is for hand-written patches: a rebuild replaces them too.
    expect(mk.json.notes).toEqual([]);

    // Clients at work through the attach: each reply must be right.
    hammer = (async () => {
      const h = await Client.connect(sock);
      const bad: string[] = [];
      let rounds = 0;
      for (; !stop; rounds++) {
        const v = `h-${rounds}`;
        const r = await h.set('hk', v);
        if (r !== 'STORED\r\n') bad.push(`set: ${r}`);
        const g = await h.get('hk');
        if (g !== v) bad.push(`get: ${g} for ${v}`);
      }
      h.close();
      return { rounds, bad };
    })();
    await sleep(100);
    const r = await hotload(['attach', String(t.pid), out, '--json']);
    if (r.code !== 0) throw new Error(`attach exited ${r.code}:\n${r.stderr}\n${r.stdout}`);
    await sleep(200);
    stop = true;
    const h = await hammer;
    expect(h.bad).toEqual([]);
    expect(h.rounds).toBeGreaterThan(10);

    // The items stored before the patch, served by the new code.
    for (let i = 0; i < 200; i += 7) expect(await c.get(`k${i}`)).toBe(`before-${i}`);
    expect(await c.cmd('incr n 3\r\n')).toBe('158\r\n');
    expect(await c.set('after', 'yes')).toBe('STORED\r\n');
    expect(await c.get('after')).toBe('yes');
    const s1 = await c.stats();
    expect(Number(s1.curr_items)).toBe(Number(s0.curr_items) + 2); // hk and after
    expect(Number(s1.cmd_get)).toBeGreaterThan(Number(s0.cmd_get));
    const st = await hotload(['status', String(t.pid), '--json']);
    expect(st.one.functions.length).toBe(mk.json.replaced.length);

    const rv = await hotload(['revert', String(t.pid), '--all']);
    if (rv.code !== 0) throw new Error(`revert exited ${rv.code}:\n${rv.stderr}\n${rv.stdout}`);
    expect(await c.get('k14')).toBe('before-14');
    expect(await c.cmd('incr n 1\r\n')).toBe('159\r\n');
    c.close();
    t.expectHealthy();
  } finally {
    stop = true;
    await hammer?.catch(() => undefined);
    await t.stop();
  }
}, 180000);
