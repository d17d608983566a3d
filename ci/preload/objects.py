# Many objects, several threads: dicts, lists, tuples, strings, JSON, sorting (deterministic).
import hashlib, json, random, sys, threading

N = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
results = [None] * 4

def work(t):
    rnd = random.Random(1000 + t)
    d = {}
    for i in range(N):
        k = f"k{rnd.randrange(N)}-{t}"
        d.setdefault(k, []).append((i, str(i) * (i % 7), {"x": i % 13}))
        if i % 5 == 0:
            d.pop(f"k{rnd.randrange(N)}-{t}", None)
    items = sorted((k, len(v), sum(e[0] for e in v)) for k, v in d.items())
    blob = json.dumps(items[: N // 10])
    again = json.loads(blob)
    results[t] = hashlib.sha256(repr(again).encode()).hexdigest()[:16] + f" {len(d)}"

threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
for th in threads:
    th.start()
for th in threads:
    th.join()
for r in results:
    print(r)
