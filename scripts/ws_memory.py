#!/usr/bin/env python3
"""Memory per upgraded, never-joined WebSocket connection of a running
hush-server, read from its /metrics (process_resident_memory_bytes).

    hush-server --listen 127.0.0.1:7990 --no-media --join-timeout 60s \
        --max-connections-per-address 100000 &
    ulimit -n 8192; python3 scripts/ws_memory.py 7990 1000
"""
import socket, sys, time, base64, os, re, urllib.request
port=int(sys.argv[1]); n=int(sys.argv[2])
def rss():
    t=urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    return int(float(re.search(r"^process_resident_memory_bytes (\S+)",t,re.M).group(1)))
r0=rss()
socks=[]
for i in range(n):
    s=socket.create_connection(("127.0.0.1",port))
    key=base64.b64encode(os.urandom(16)).decode()
    s.sendall(f"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    resp=s.recv(4096)
    assert b"101" in resp.split(b"\r\n")[0], resp
    socks.append(s)
time.sleep(1)
r1=rss()
print(f"{n} upgraded, unjoined connections: RSS {r0/1e6:.1f} MB -> {r1/1e6:.1f} MB, {(r1-r0)/n/1024:.1f} KiB each")
