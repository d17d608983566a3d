# Inputs for the preload workloads, deterministic: gen.py DIR SCALE
import os, random, sys
d, scale = sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
os.makedirs(d, exist_ok=True)
rnd = random.Random(7)
words = ["".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(3, 12))) for _ in range(5000)]
with open(os.path.join(d, "lines.txt"), "w") as f:
    for _ in range(int(600_000 * scale)):
        f.write(" ".join(rnd.choice(words) for _ in range(rnd.randint(1, 8))) + "\n")
n = int(150_000 * scale)
with open(os.path.join(d, "script.sql"), "w") as f:
    f.write("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, grp INTEGER, val REAL, note TEXT);\nBEGIN;\n")
    for i in range(n):
        f.write(f"INSERT INTO t VALUES({i},'{rnd.choice(words)}',{rnd.randrange(100)},{rnd.random()*1000:.3f},'{' '.join(rnd.choice(words) for _ in range(rnd.randint(0,6)))}');\n")
    f.write("COMMIT;\nCREATE INDEX ti ON t(name);\nCREATE INDEX tg ON t(grp, val);\n")
    f.write("SELECT grp, count(*), round(sum(val),3), max(length(note)) FROM t GROUP BY grp ORDER BY grp;\n")
    f.write("SELECT name, count(*) c FROM t GROUP BY name ORDER BY c DESC, name LIMIT 20;\n")
    f.write("UPDATE t SET note = note || name WHERE grp % 3 = 0;\nDELETE FROM t WHERE grp % 7 = 0;\nVACUUM;\n")
    f.write("SELECT count(*), round(sum(val),3), sum(length(note)) FROM t;\n")
    f.write("SELECT a.grp, count(*) FROM t a JOIN t b ON a.id = b.id + 1 AND a.grp = b.grp GROUP BY a.grp ORDER BY a.grp LIMIT 10;\n")
src = os.path.join(d, "gitsrc")
os.makedirs(src, exist_ok=True)
for i in range(int(1500 * scale)):
    sub = os.path.join(src, f"dir{i % 37}")
    os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, f"file{i}.txt"), "w") as f:
        for _ in range(rnd.randint(5, 120)):
            f.write(" ".join(rnd.choice(words) for _ in range(rnd.randint(1, 12))) + "\n")
