#!/usr/bin/env python3
"""Prints the BitTorrent v2 (BEP 52) `pieces root` libtorrent computes for each file
named on the command line, as hex, one line per file ("-" for an empty file).

The oracle for Sigma's content identity: our roots must be libtorrent's."""
import os
import sys

import warnings

import libtorrent as lt

warnings.simplefilter("ignore", DeprecationWarning)


def pieces_root(path):
    fs = lt.file_storage()
    lt.add_files(fs, path)
    torrent = lt.create_torrent(fs, 0, lt.create_torrent.v2_only)
    lt.set_piece_hashes(torrent, os.path.dirname(os.path.abspath(path)))
    info = torrent.generate()[b"info"]
    node = info[b"file tree"][os.path.basename(path).encode()][b""]
    root = node.get(b"pieces root")
    return root.hex() if root else "-"


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(pieces_root(name))
