#!/usr/bin/env python3
"""An RTSP camera for meshcast's end-to-end tests.

gst-rtsp-server serves live test video (H.264) and audio (AAC) at
rtsp://127.0.0.1:PORT/cam, PORT the first argument, until it is killed. It
prints "ready" once it listens.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: rtsp_server.py PORT")
    Gst.init(None)
    aac = "avenc_aac" if Gst.ElementFactory.find("avenc_aac") else "voaacenc"
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        "( videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=30/1"
        " ! x264enc tune=zerolatency key-int-max=30 ! rtph264pay name=pay0 pt=96 config-interval=1"
        " audiotestsrc is-live=true ! audioconvert ! audioresample ! " + aac +
        " ! rtpmp4gpay name=pay1 pt=97 )")
    # One pipeline for every client: a reconnecting client finds it running.
    factory.set_shared(True)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(sys.argv[1])
    server.get_mount_points().add_factory("/cam", factory)
    if server.attach(None) == 0:
        sys.exit("rtsp_server.py: cannot listen on 127.0.0.1:" + sys.argv[1])
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
