#!/bin/sh
# Regenerates the test clips of this directory with ffmpeg (libx264, libx265).
# Usage: sh testdata/clips/generate.sh   (from anywhere), or: go generate ./testdata/clips
# Single-threaded encoding makes the output byte-identical run to run with the same
# ffmpeg/x264/x265 versions (x264 writes its version in an SEI); across versions its shape
# stays the same: 640x360, 25 fps, 250 frames, an IDR every 50 frames with
# SPS/PPS(/VPS) before each, no B-frames, about 1 Mbit/s.
set -eu
cd "$(dirname "$0")"

ffmpeg -hide_banner -loglevel error -y \
  -f lavfi -i testsrc2=size=640x360:rate=25 -t 10 -an \
  -threads 1 -c:v libx264 -preset veryfast -profile:v main -pix_fmt yuv420p \
  -bf 0 -g 50 -keyint_min 50 -sc_threshold 0 \
  -b:v 1M -maxrate 1M -bufsize 1M \
  -x264-params repeat-headers=1:open-gop=0 \
  -f h264 testsrc2-640x360-25fps.h264

ffmpeg -hide_banner -loglevel error -y \
  -f lavfi -i testsrc2=size=640x360:rate=25 -t 10 -an \
  -threads 1 -c:v libx265 -preset veryfast -pix_fmt yuv420p \
  -b:v 1M -maxrate 1M -bufsize 1M \
  -x265-params keyint=50:min-keyint=50:scenecut=0:bframes=0:open-gop=0:repeat-headers=1:info=0:pools=1:frame-threads=1:log-level=error \
  -f hevc testsrc2-640x360-25fps.h265
