#!/usr/bin/env bash
# Regenerates test-pattern.ivf, the VP8 clip hush ships for video tests and
# the demo (so the default build needs no video library). Needs ffmpeg with
# libvpx (Debian: apt-get install ffmpeg). The output is committed; CI does
# not run this.
set -euo pipefail
cd "$(dirname "$0")"
ffmpeg -hide_banner -loglevel error -y \
  -f lavfi -i "testsrc=size=320x240:rate=15:duration=4" \
  -c:v libvpx -b:v 200k -g 15 -keyint_min 15 -auto-alt-ref 0 -deadline good -cpu-used 4 \
  -f ivf test-pattern.ivf
ls -l test-pattern.ivf
