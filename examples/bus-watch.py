#!/usr/bin/python3
"""Prints the captchaocr element's bus messages (gst-python, Debian package
python3-gst-1.0), plus warnings, errors and end of stream.

Usage: bus-watch.py [-h|--help] [--] [PIPELINE DESCRIPTION]
  e.g. bus-watch.py filesrc location=a.png ! decodebin ! videoconvert ! \\
           imagefreeze num-buffers=1 ! captchaocr model=m.safetensors ! fakesink
  Without arguments: videotestsrc num-buffers=5 ! captchaocr ! fakesink
  Each argument is one token, as for gst-launch-1.0: a property value with
  spaces (location=my captcha.png) needs no quoting inside its argument.

Each "captcha" message holds timestamp, stream-time, running-time and
duration (nanoseconds) and a list "results" of structures with text,
confidence, x, y, width, height, id, parent-id and changed. One line is
printed per result:
  running-time<TAB>text<TAB>confidence<TAB>x,y WIDTHxHEIGHT<TAB>changed
"""
import sys

# gi (PyGObject, Debian python3-gi) is imported by main() after the options, so that
# --help works without it and its absence is a clear message
GLib = Gst = None


def import_gstreamer():
    """Imports GLib and Gst into this module; returns an error text or None."""
    global GLib, Gst
    try:
        import gi
        gi.require_version("Gst", "1.0")
        from gi.repository import GLib, Gst  # noqa: F811
    except (ImportError, ValueError) as error:
        return ("%s: %s (needs gst-python, Debian python3-gst-1.0, in this interpreter; "
                "Debian's is /usr/bin/python3)" % (sys.executable, error))
    return None


def format_time(nanoseconds):
    if nanoseconds == Gst.CLOCK_TIME_NONE:
        return "none"
    return "%.3f s" % (nanoseconds / Gst.SECOND)


def results_of(structure):
    """The "results" list of a captcha message: a GstValueList of
    structures, which gst-python gives as an iterable Gst.ValueList."""
    return list(structure.get_value("results") or [])


def on_message(bus, message, loop):
    kind = message.type
    if kind == Gst.MessageType.ELEMENT:
        structure = message.get_structure()
        if structure is not None and structure.get_name() == "captcha":
            ok, running_time = structure.get_uint64("running-time")
            for result in results_of(structure):
                print("%s\t%s\t%.6g\t%d,%d %dx%d\t%s" % (
                    format_time(running_time),
                    result.get_string("text"),
                    result.get_double("confidence")[1],
                    result.get_int("x")[1], result.get_int("y")[1],
                    result.get_int("width")[1], result.get_int("height")[1],
                    "changed" if result.get_boolean("changed")[1] else "same"),
                    flush=True)
    elif kind == Gst.MessageType.WARNING:
        error, debug = message.parse_warning()
        print("warning from %s: %s" % (message.src.get_name(), error.message),
              file=sys.stderr)
    elif kind == Gst.MessageType.ERROR:
        error, debug = message.parse_error()
        print("error from %s: %s" % (message.src.get_name(), error.message),
              file=sys.stderr)
        loop.exit_status = 1
        loop.quit()
    elif kind == Gst.MessageType.EOS:
        loop.quit()
    return True


def main(argv):
    args = argv[1:]
    if args and args[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    if args and args[0] == "--":
        args = args[1:]
    elif args and args[0].startswith("-"):
        # no pipeline description starts with "-": an option this script lacks
        print("bus-watch.py: unknown option %s\n\n%s" % (args[0], __doc__.strip()),
              file=sys.stderr)
        return 2
    error = import_gstreamer()
    if error:
        print("bus-watch.py: %s" % error, file=sys.stderr)
        return 1
    Gst.init(None)
    # each argument one token, as gst-launch-1.0 and print-results take them
    # (joined with spaces, a location= with a space would split in two)
    description = args or \
        "videotestsrc num-buffers=5 ! captchaocr ! fakesink".split()
    try:
        pipeline = Gst.parse_launchv(description)
    except GLib.Error as error:
        print("pipeline: %s" % error.message, file=sys.stderr)
        return 2
    # only a pipeline has a bus: a single element is refused (nothing would link it),
    # a bin in parentheses is run in a pipeline, as gst-launch-1.0 does
    if not isinstance(pipeline, Gst.Bin):
        print("pipeline: the description is one element, %s, not a pipeline (link a "
              "source, captchaocr and a sink with !)" % pipeline.get_name(), file=sys.stderr)
        return 2
    if not isinstance(pipeline, Gst.Pipeline):
        bin_ = pipeline
        pipeline = Gst.Pipeline.new(None)
        pipeline.add(bin_)
    loop = GLib.MainLoop()
    loop.exit_status = 0
    bus = pipeline.get_bus()
    bus.add_signal_watch()
    bus.connect("message", on_message, loop)
    print("running-time\ttext\tconfidence\tregion\tchanged")
    if pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
        # the reason (e.g. the model file) is in an error message on the bus
        message = bus.timed_pop_filtered(Gst.SECOND, Gst.MessageType.ERROR)
        if message is not None:
            on_message(bus, message, loop)
        loop.exit_status = 1
    else:
        loop.run()
    pipeline.set_state(Gst.State.NULL)
    bus.remove_signal_watch()
    return loop.exit_status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
