"""Pictures of ground truth and detections, drawn with matplotlib."""

import math

import numpy as np

GROUND_TRUTH_COLOR = "#00c853"
DETECTION_COLOR = "#ff1744"


def _name(label, class_names):
    label = int(label)
    return class_names[label] if class_names is not None and 0 <= label < len(class_names) else str(label)


def draw_boxes(axes, image, boxes=None, labels=None, scores=None, class_names=None, color=DETECTION_COLOR,
               ground_truth=None, score_threshold=0.0):
    """Draws one image on matplotlib `axes` with labelled boxes.

    Args:
        axes: a matplotlib `Axes`.
        image: `[height, width, 3]` uint8, or float in [0, 255].
        boxes, labels, scores: detections, pixel `xyxy` `[D, 4]`, `[D]`, `[D]` (scores may be None); entries with a
            negative label or a score below `score_threshold` are skipped.
        class_names: sequence of str or None.
        color: matplotlib colour of the detections.
        ground_truth: `(boxes [M, 4], labels [M])` or None, drawn dashed in green; negative labels are padding.
    """
    from matplotlib.patches import Rectangle

    axes.imshow(np.clip(np.asarray(image, np.float32), 0, 255).astype(np.uint8))
    axes.set_axis_off()

    def draw(box, text, edge, style):
        x1, y1, x2, y2 = (float(v) for v in box)
        axes.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=edge, linewidth=1.5,
                                 linestyle=style))
        axes.text(x1, y1, text, color="white", fontsize=7, va="bottom",
                  bbox={"facecolor": edge, "edgecolor": "none", "pad": 1, "alpha": 0.8})

    if ground_truth is not None:
        for box, label in zip(np.reshape(ground_truth[0], (-1, 4)), np.reshape(ground_truth[1], (-1,))):
            if label >= 0:
                draw(box, _name(label, class_names), GROUND_TRUTH_COLOR, "--")
    if boxes is not None:
        scores = np.ones(len(labels)) if scores is None else np.reshape(scores, (-1,))
        for box, label, score in zip(np.reshape(boxes, (-1, 4)), np.reshape(labels, (-1,)), scores):
            if label >= 0 and score >= score_threshold:
                draw(box, f"{_name(label, class_names)} {score:.2f}", color, "-")


def save_detection_grid(path, images, detections=None, ground_truth=None, class_names=None, columns=4,
                        score_threshold=0.3, title=None):
    """Saves a PNG grid of images with ground truth (green, dashed) and detections (red, with scores).

    Args:
        path: str, the `.png` file to write.
        images: sequence of `[height, width, 3]` images.
        detections: sequence over images of `(boxes [D, 4], scores [D], labels [D])` pixel xyxy, or a `predict`
            output dict `{"boxes", "scores", "labels"}`; None draws ground truth only.
        ground_truth: sequence over images of `(boxes, labels)`, or a targets dict `{"boxes", "labels"}`; or None.
        class_names: sequence of str or None.
        columns: int, images per row.
        score_threshold: float, detections below it are not drawn.
        title: str or None.

    Returns:
        `path`.
    """
    # A bare Figure, not pyplot: no GUI backend is touched, so this works headless and leaves notebooks alone.
    from matplotlib.figure import Figure

    images = list(images)
    if isinstance(detections, dict):
        detections = list(zip(detections["boxes"], detections["scores"], detections["labels"]))
    if isinstance(ground_truth, dict):
        ground_truth = list(zip(ground_truth["boxes"], ground_truth["labels"]))
    columns = max(1, min(columns, len(images)))
    rows = math.ceil(len(images) / columns)
    figure = Figure(figsize=(3 * columns, 3 * rows))
    axes = figure.subplots(rows, columns, squeeze=False)
    for index, ax in enumerate(axes.flat):
        if index >= len(images):
            ax.set_axis_off()
            continue
        boxes, scores, labels = detections[index] if detections is not None else (None, None, None)
        draw_boxes(ax, images[index], boxes, labels, scores, class_names,
                   ground_truth=ground_truth[index] if ground_truth is not None else None,
                   score_threshold=score_threshold)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path
