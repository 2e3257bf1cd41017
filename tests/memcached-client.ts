// memcached for the tests: its two builds (scripts/build-memcached.sh), a server
// on a unix socket, and a text-protocol client.
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import * as path from 'path';
import { ROOT, Target, sleep, tmpdir } from './helpers';

/** The -O2 and -O1 build directories (cached; built on first use). */
export function memcachedBuilds(): { o2: string; o1: string } {
  const [o2, o1] = execFileSync(path.join(ROOT, 'scripts/build-memcached.sh'), { encoding: 'utf8' }).trim().split('\n').slice(-2);
  return { o2, o1 };
}

/** Start `server` with 4 worker threads on a new unix socket; resolves once the socket is there. */
export async function startMemcached(server: string): Promise<{ t: Target; sock: string }> {
  const sock = path.join(tmpdir('hotload-mc-'), 'mc.sock');
  const t = Target.start(server, ['-s', sock, '-t', '4', ...(process.getuid?.() === 0 ? ['-u', 'root'] : [])]);
  for (let i = 0; i < 250 && !fs.existsSync(sock) && t.alive(); i++) await sleep(20);
  if (!fs.existsSync(sock)) {
    // Said here, not later as a client's ENOENT: a server that exited, or one that never opened its socket.
    const how = t.alive() ? 'is running but has no socket after 5 s' : `exited (${t.child.exitCode ?? t.child.signalCode})`;
    await t.stop();
    throw new Error(`memcached ${server} ${how}: ${sock}`);
  }
  return { t, sock };
}

export /** A memcached text-protocol client over a unix socket, one request at a time. */
class Client {
  private buf = '';
  private waiter?: () => void;
  private constructor(private readonly s: net.Socket) {
    s.setEncoding('latin1');
    s.on('data', (d: string) => {
      this.buf += d;
      this.waiter?.();
    });
  }

  static connect(sock: string): Promise<Client> {
    return new Promise((resolve, reject) => {
      const s = net.createConnection(sock, () => resolve(new Client(s)));
      s.once('error', reject);
    });
  }

  /** Send one command; the reply up to its end (END for get/stats, else one line). */
  async cmd(text: string): Promise<string> {
    const multi = /^(get|gets|stats)\b/.test(text);
    this.buf = '';
    this.s.write(text);
    const done = () => (multi ? /(^|\r\n)(END|ERROR|SERVER_ERROR[^\r]*)\r\n$/.test(this.buf) : this.buf.endsWith('\r\n'));
    const until = Date.now() + 10000;
    while (!done()) {
      if (Date.now() > until) throw new Error(`no reply to ${JSON.stringify(text)}; got ${JSON.stringify(this.buf)}`);
      await new Promise<void>((r) => {
        this.waiter = r;
        setTimeout(r, 100);
      });
    }
    return this.buf;
  }

  set(k: string, v: string) {
    return this.cmd(`set ${k} 0 0 ${v.length}\r\n${v}\r\n`);
  }

  async get(k: string): Promise<string | undefined> {
    const m = /^VALUE \S+ \d+ \d+\r\n(.*)\r\nEND\r\n$/s.exec(await this.cmd(`get ${k}\r\n`));
    return m?.[1];
  }

  async stats(): Promise<Record<string, string>> {
    return Object.fromEntries([...(await this.cmd('stats\r\n')).matchAll(/^STAT (\S+) (.*)\r$/gm)].map((m) => [m[1], m[2]]));
  }

  close() {
    this.s.destroy();
  }
}

