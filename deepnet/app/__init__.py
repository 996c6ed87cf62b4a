"""Your own digits: ``deepnet predict`` for image files and ``deepnet serve``, a local page to
draw digits on and watch the network read them.

``preprocess`` makes a picture an MNIST input (needs Pillow: the ``[app]`` extra) from its
steps: ``decode`` (bytes -> grayscale), ``ink``, ``ruled_lines`` and ``digit``;
``inference`` loads a network and runs it for several threads; ``server`` is the web app.
The two commands that run them are deepnet.cli.digits (the app never imports the command line).
"""
