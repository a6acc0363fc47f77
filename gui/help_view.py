"""'What am I looking at?': one page that explains the window's pictures and numbers in place (F1)."""

from __future__ import annotations

from PySide6.QtWidgets import QDialog, QTextBrowser, QVBoxLayout, QWidget

HELP_HTML = """
<h3>What am I looking at?</h3>
<p>Four networks from four eras run on the same frame. Each panel is one network.</p>

<p><b>The input it sees.</b> Each network gets its own crop and resize of the frame: 32&times;32
for the CIFAR-10 profile, 224&times;224 for ImageNet. Double-click it to see the picture as it
was loaded.</p>

<p><b>The bars</b> are the network's five most likely classes, with its softmax probability. A
&#10003; marks the true class when the source has labels (a CIFAR-10 test set, or folders named
after classes).</p>

<p><b>Badges.</b> <i>all 4 agree</i>: the four networks gave the same top-1 answer.
<i>majority 3/4</i>: three of them did, and this network is one of the three. <i>agrees 2/4</i>:
one other network gave the same answer. <i>disagrees</i>: no other network did.
<i>&#10003; correct</i> or <i>&#10007; label: dog</i> appear only with labels.</p>

<p><b>Feature maps</b> are the outputs of the layer chosen under the panel, one tile per channel
(up to 64). Dark blue is low and yellow is high. By default every tile shares one range, so
channels can be compared. <i>Per channel</i> in the toolbar stretches each tile to its own range,
which shows the pattern of a weak channel. Click a tile to paint that channel over the input;
hover for its values.</p>

<p><b>ENet's class map.</b> ENet was built for segmentation: it gives a class to every pixel.
Here it was trained on whole CIFAR-10 images, so its per-pixel answers show which parts of the
picture pushed it towards each class. It is not a true segmentation, and the
ImageNet profile has none.</p>

<p><b>Timings.</b> The figure at the top right of a panel is this frame's forward pass, timed in
the live pipeline: a new picture each frame, the four networks in turn (each pushes the others'
weights out of the processor's caches), the shown layer's outputs copied out, and the window
sharing the Python interpreter. <code>python main.py bench</code> times a network alone on one
input again and again: for LeNet-5 and ENet its figure is several times lower. The table gives the medians
(p50) and the 95th percentiles over the last 300 frames of this source, warm, and the
preprocessing (crop, resize, normalise) apart. <i>Throughput, all four</i> counts only the time
frames kept coming.</p>

<p><b>What the numbers cover.</b> Every figure belongs to the source on screen and starts over
when another one opens, or on Reset (&#8635;). <i>Live top-1</i> is the accuracy on this source's
labelled frames. <i>Test top-1</i> comes from the 10,000 CIFAR-10 test images, measured when the
weights were trained.</p>

<p><b>This is&hellip;</b> (in the status bar) names what a camera or video shows: type a
class, and the frames that follow count towards the running accuracy and the confusion matrix
until you press &times;.</p>

<p><b>The status bar's right end</b> gives the frame on screen, the engine's frames per second,
&ldquo;shown N/M&rdquo; (the answers drawn of those the engine made: the window draws at most 30 a
second, 15 while a data set or a folder with no wait runs as fast as the networks go, so that
drawing takes less of the machine from what is measured), &ldquo;dropped A + B&rdquo; (frames the
engine skipped for a newer one, answers the display skipped), and the longest time the window did
not respond since the first frame; its tooltip says what each counts and gives the start-up's
longest pause, loading included. A panel's cost line
(&ldquo;ORT&rdquo;, &ldquo;bf16&rdquo;) has a tooltip with what runs that network and why: the times
measured when it loaded and, where the two were close, the backend (or, for a slow network on
torch, its thread count) timed again on live frames from two seconds in (the window's drawing shares
the cores; the status bar says what they chose).</p>

<p><b>Statistics&hellip;</b> (under the table) shows each network's confusion matrix, how often
the networks agree, and, on video, how often each network's answer flips from frame to frame.</p>

<p><b>Keys.</b> Space: play or pause. Right arrow: one frame forward. Left arrow: one frame back
(shown again, not counted again). Ctrl+V: classify the image on the clipboard. F1: this page.</p>
"""


class HelpView(QDialog):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("What am I looking at?")
        self.resize(640, 620)
        self.text = QTextBrowser(self)
        self.text.setHtml(HELP_HTML)
        self.text.setOpenExternalLinks(False)
        layout = QVBoxLayout(self)
        layout.addWidget(self.text)
