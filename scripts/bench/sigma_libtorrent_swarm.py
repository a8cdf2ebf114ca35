#!/usr/bin/env python3
"""libtorrent's side of scripts/bench/sigma-vs-libtorrent.

    sigma_libtorrent_swarm.py FILE PEERS RATE WORKDIR [PRESET]

PRESET is how the sessions are tuned: `default` (libtorrent's defaults), `hps`
(libtorrent's own high_performance_seed settings pack on every session) or
`hps+super` (that, and super-seeding on the seeder).

One seeder and PEERS downloaders, each a process of its own with one libtorrent 2.x
session on loopback: TCP only (no uTP), no tracker, DHT, LSD, UPnP or NAT-PMP; every
session's upload capped at RATE bytes/s, and loopback peers put in the global peer class
so that the cap applies to them (libtorrent exempts local peers by default); several
connections per IP allowed (every peer is 127.0.0.1); peers given to each other directly.
Prints one line: the time until every downloader holds the verified file, the seeder's
upload over the file size, and the downloaders' CPU seconds per GiB received.
"""
import json
import os
import resource
import subprocess
import sys
import time
import warnings

warnings.simplefilter("ignore", DeprecationWarning)
import libtorrent as lt  # noqa: E402


def session(port, rate, preset):
    settings = lt.high_performance_seed() if preset.startswith("hps") else {}
    settings.update({
        "listen_interfaces": f"127.0.0.1:{port}",
        "enable_dht": False, "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
        "enable_outgoing_utp": False, "enable_incoming_utp": False,
        "upload_rate_limit": rate, "download_rate_limit": 0,
        "allow_multiple_connections_per_ip": True,
        "alert_mask": lt.alert.category_t.status_notification | lt.alert.category_t.error_notification,
    })
    ses = lt.session(settings)
    # Loopback peers would be in the local peer class, which has no rate limit.
    peer_filter = lt.ip_filter()
    peer_filter.add_rule("0.0.0.0", "255.255.255.255", 1 << lt.session.global_peer_class_id)
    ses.set_peer_class_filter(peer_filter)
    return ses


def make_torrent(path, out):
    fs = lt.file_storage()
    lt.add_files(fs, path)
    torrent = lt.create_torrent(fs)
    lt.set_piece_hashes(torrent, os.path.dirname(os.path.abspath(path)))
    with open(out, "wb") as f:
        f.write(lt.bencode(torrent.generate()))


def peer_main(role, torrent_path, save_path, port, rate, peer_ports, preset):
    ses = session(port, rate, preset)
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(torrent_path)
    params.save_path = save_path
    if role == "seed":
        params.flags |= lt.torrent_flags.seed_mode
        if preset.endswith("+super"):
            params.flags |= lt.torrent_flags.super_seeding
    handle = ses.add_torrent(params)
    print(json.dumps({"event": "ready"}), flush=True)
    for p in peer_ports:
        if p != port:
            handle.connect_peer(("127.0.0.1", p))
    completed = None
    stop_file = os.path.join(os.path.dirname(torrent_path), "stop")
    while not os.path.exists(stop_file):
        status = handle.status()
        if completed is None and role != "seed" and status.is_seeding:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            completed = {"event": "complete", "cpu": usage.ru_utime + usage.ru_stime,
                         "received": status.total_payload_download}
            print(json.dumps(completed), flush=True)
        # Keep the mesh whole: reconnect peers that dropped.
        if len(handle.get_peer_info()) < len(peer_ports) - 1:
            for p in peer_ports:
                if p != port:
                    handle.connect_peer(("127.0.0.1", p))
        time.sleep(0.02)
    status = handle.status()
    print(json.dumps({"event": "stopped", "uploaded": status.total_payload_upload}), flush=True)


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    if sys.argv[1] == "--peer":
        role, torrent_path, save_path, port, rate = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
        peer_main(role, torrent_path, save_path, port, rate, [int(p) for p in sys.argv[7].split(",")], sys.argv[8])
        return
    path, peers, rate, work = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    preset = sys.argv[5] if len(sys.argv) > 5 else "default"
    size = os.path.getsize(path)
    os.makedirs(work, exist_ok=True)
    torrent_path = os.path.join(work, "file.torrent")
    make_torrent(path, torrent_path)
    ports = [free_port() for _ in range(peers + 1)]
    port_list = ",".join(map(str, ports))
    me = os.path.abspath(__file__)
    seed = subprocess.Popen([sys.executable, me, "--peer", "seed", torrent_path, os.path.dirname(os.path.abspath(path)),
                             str(ports[0]), str(rate), port_list, preset], stdout=subprocess.PIPE, text=True)
    assert json.loads(seed.stdout.readline())["event"] == "ready"
    start = time.monotonic()
    downloaders = []
    for i in range(peers):
        save = os.path.join(work, f"p{i}")
        os.makedirs(save, exist_ok=True)
        downloaders.append(subprocess.Popen([sys.executable, me, "--peer", "get", torrent_path, save, str(ports[i + 1]),
                                             str(rate), port_list, preset], stdout=subprocess.PIPE, text=True))
    results = []
    for d in downloaders:
        assert json.loads(d.stdout.readline())["event"] == "ready"
    for d in downloaders:
        results.append(json.loads(d.stdout.readline()))
    elapsed = time.monotonic() - start
    open(os.path.join(work, "stop"), "w").close()
    uploaded = json.loads(seed.stdout.readline())["uploaded"]
    for p in [seed] + downloaders:
        p.wait()
    for i in range(peers):
        with open(os.path.join(work, f"p{i}", os.path.basename(path)), "rb") as a, open(path, "rb") as b:
            if a.read() != b.read():
                sys.exit(f"libtorrent: p{i}'s copy differs")
    tmin = size / rate
    cpu = sum(r["cpu"] for r in results)
    received = sum(r["received"] for r in results)
    print(f"{'lt ' + preset:12s} all done in {elapsed:6.2f} s = {elapsed / tmin:4.2f} x T_min; seeder uploaded {uploaded / size:4.2f} x F; "
          f"{cpu / (received / 2**30):5.2f} CPU s per GiB received (libtorrent {lt.__version__})")


if __name__ == "__main__":
    main()
