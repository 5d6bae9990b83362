"""Pictures of ground truth and detections, and of class maps blended over their images, drawn with matplotlib."""

import math

import numpy as np

GROUND_TRUTH_COLOR = "#00c853"
DETECTION_COLOR = "#ff1744"
DPI = 100


def _name(label, class_names):
    label = int(label)
    return class_names[label] if class_names is not None and 0 <= label < len(class_names) else str(label)


def _overlay_masks(image, masks, boxes, labels, scores, score_threshold, mask_paste="keras_fpn"):
    """The image with each drawn detection's mask (box-relative `[S, S]` probabilities) tinted in."""
    from keras_fpn.ops.masks import paste_masks

    image = np.clip(np.asarray(image, np.float32), 0, 255)
    keep = [i for i, (label, score) in enumerate(zip(labels, scores)) if label >= 0 and score >= score_threshold]
    if not keep:
        return image
    pasted = np.asarray(paste_masks(np.asarray(masks, np.float32)[None, keep], np.asarray(boxes, np.float32)[None, keep],
                                    image.shape[0], image.shape[1], convention=mask_paste))[0]
    colors = np.array([[255, 23, 68], [41, 121, 255], [255, 196, 0], [0, 200, 83], [170, 0, 255]], np.float32)
    for k, mask in enumerate(pasted):
        inside = mask.astype(bool)
        image[inside] = 0.5 * image[inside] + 0.5 * colors[k % len(colors)]
    return image


LABEL_FONT_SIZE = 7


def draw_boxes(axes, image, boxes=None, labels=None, scores=None, class_names=None, color=DETECTION_COLOR,
               ground_truth=None, score_threshold=0.0, masks=None, mask_paste="keras_fpn"):
    """Draws one image on matplotlib `axes` with labelled boxes.

    Args:
        axes: a matplotlib `Axes`.
        image: `[height, width, 3]` uint8, or float in [0, 255].
        boxes, labels, scores: detections, pixel `xyxy` `[D, 4]`, `[D]`, `[D]` (scores may be None); entries with a
            negative label or a score below `score_threshold` are skipped.
        class_names: sequence of str or None.
        color: matplotlib colour of the detections.
        ground_truth: `(boxes [M, 4], labels [M])` or None, drawn dashed in green; negative labels are padding.
        masks: `[D, S, S]` box-relative mask probabilities of the detections (a `MaskRCNN`'s), or None; each drawn
            detection's mask is pasted into the image (`keras_fpn.ops.paste_masks`) and tinted.
        mask_paste: the pasting convention (`paste_masks`'s `convention`: the model's `mask_paste`).
    """
    from matplotlib.patches import Rectangle

    if masks is not None and boxes is not None:
        image = _overlay_masks(image, masks, np.reshape(boxes, (-1, 4)), np.reshape(labels, (-1,)),
                               np.ones(len(labels)) if scores is None else np.reshape(scores, (-1,)), score_threshold,
                               mask_paste)
    axes.imshow(np.clip(np.asarray(image, np.float32), 0, 255).astype(np.uint8))
    axes.set_axis_off()

    # Label boxes are placed so that they do not cover each other: a label that would overlap one already drawn
    # moves down a line (into its box), as often as needed. Sizes are estimated in image pixels from the axes'
    # scale: a line is the font's height plus the label box's padding, a character about 0.6 of the font size.
    figure = axes.get_figure()
    height_px = axes.get_position().height * figure.get_figheight() * figure.dpi
    pixels_per_point = figure.dpi / 72.0 * float(np.shape(image)[0]) / max(height_px, 1.0)
    line, char = (LABEL_FONT_SIZE + 4) * pixels_per_point, 0.6 * LABEL_FONT_SIZE * pixels_per_point
    placed = []  # (x1, x2, bottom) of the labels drawn so far, in image pixels

    def label_position(x1, y1, text):
        x2, bottom = x1 + len(text) * char, y1
        while any(x1 < other_x2 and other_x1 < x2 and abs(bottom - other_bottom) < line
                  for other_x1, other_x2, other_bottom in placed):
            bottom += line
        placed.append((x1, x2, bottom))
        return bottom

    def draw(box, text, edge, style):
        x1, y1, x2, y2 = (float(v) for v in box)
        axes.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=edge, linewidth=1.5,
                                 linestyle=style))
        axes.text(x1, label_position(x1, y1, text), text, color="white", fontsize=LABEL_FONT_SIZE, va="bottom",
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
                        score_threshold=0.3, title=None, mask_paste="keras_fpn"):
    """Saves a PNG grid of images with ground truth (green, dashed) and detections (red, with scores).

    Args:
        path: str, the `.png` file to write.
        images: sequence of `[height, width, 3]` images.
        detections: sequence over images of `(boxes [D, 4], scores [D], labels [D])` pixel xyxy (plus
            `masks [D, S, S]`), or a `predict` output dict `{"boxes", "scores", "labels"}` (a `MaskRCNN`'s `"masks"`
            are drawn too); None draws ground truth only.
        ground_truth: sequence over images of `(boxes, labels)`, or a targets dict `{"boxes", "labels"}`; or None.
        class_names: sequence of str or None.
        columns: int, images per row.
        score_threshold: float, detections below it are not drawn.
        title: str or None.
        mask_paste: how masks are pasted (`keras_fpn.ops.paste_masks`'s `convention`; the model's `mask_paste`).

    Returns:
        `path`. One image without a title is drawn at its own size (a 640x480 image gives a 640x480 PNG); a grid
        has 3-inch cells (300 pixels wide) with the images' aspect.
    """
    # A bare Figure, not pyplot: no GUI backend is touched, so this works headless and leaves notebooks alone.
    from matplotlib.figure import Figure

    images = list(images)
    if isinstance(detections, dict):
        keys = ("boxes", "scores", "labels", "masks") if "masks" in detections else ("boxes", "scores", "labels")
        detections = list(zip(*(detections[key] for key in keys)))
    if isinstance(ground_truth, dict):
        ground_truth = list(zip(ground_truth["boxes"], ground_truth["labels"]))
    columns = max(1, min(columns, len(images)))
    rows = math.ceil(len(images) / columns)
    if len(images) == 1 and not title:
        # One image: the picture has its size, pixel for pixel.
        height, width = np.shape(images[0])[:2]
        figure = Figure(figsize=(width / DPI, height / DPI))
        axes = figure.subplots(1, 1, squeeze=False)
        figure.subplots_adjust(left=0, right=1, bottom=0, top=1)
    else:
        # A grid: 3-inch cells with the images' aspect (the tallest one's).
        aspect = max(np.shape(image)[0] / max(np.shape(image)[1], 1) for image in images)
        figure = Figure(figsize=(3 * columns, 3 * aspect * rows))
        axes = figure.subplots(rows, columns, squeeze=False)
    for index, ax in enumerate(axes.flat):
        if index >= len(images):
            ax.set_axis_off()
            continue
        found = tuple(detections[index]) if detections is not None else (None, None, None)
        boxes, scores, labels = found[:3]
        draw_boxes(ax, images[index], boxes, labels, scores, class_names,
                   ground_truth=ground_truth[index] if ground_truth is not None else None,
                   score_threshold=score_threshold, masks=found[3] if len(found) > 3 else None,
                   mask_paste=mask_paste)
    if title:
        figure.suptitle(title)
    if len(images) > 1 or title:
        figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    return path


# Class colours of segmentation pictures (class k takes entry k modulo the length): tab20's, a palette made to
# tell neighbouring classes apart.
CLASS_COLORS = np.array([[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
                         [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207],
                         [174, 199, 232], [255, 187, 120], [152, 223, 138], [255, 152, 150], [197, 176, 213],
                         [196, 156, 148], [247, 182, 210], [199, 199, 199], [219, 219, 141], [158, 218, 229]],
                        np.float32)


def blend_class_map(image, class_map, alpha=0.5, skip=(0, 255)):
    """`image` with each pixel's class colour (`CLASS_COLORS`) blended in, as uint8.

    Args:
        image: `[H, W, 3]` uint8, or float in [0, 255].
        class_map: `[H, W]` integer classes (a segmenter's `predict`, or a mask).
        alpha: float, default 0.5, the colour's weight.
        skip: classes left as they are, default background (0) and the ignore label (255).
    """
    image = np.clip(np.asarray(image, np.float32), 0, 255)
    class_map = np.asarray(class_map)
    if class_map.shape != image.shape[:2]:
        raise ValueError(f"Received a class map of shape {class_map.shape} for an image of shape {image.shape}; "
                         "expected the image's height and width.")
    tinted = ~np.isin(class_map, list(skip))
    colors = CLASS_COLORS[class_map[tinted] % len(CLASS_COLORS)]
    image[tinted] = (1.0 - alpha) * image[tinted] + alpha * colors
    return np.round(image).astype(np.uint8)


def save_segmentation_grid(path, images, class_maps, masks=None, class_names=None, columns=4, alpha=0.5,
                           skip=(0, 255), title=None):
    """Saves a PNG of images with their predicted class maps blended in (and their ground-truth masks beside them),
    with a legend of the classes shown.

    Args:
        path: str, the `.png` file to write.
        images: sequence of `[H, W, 3]` images. class_maps: sequence of `[H, W]` integer maps (`predict`'s).
        masks: sequence of `[H, W]` ground-truth masks, or None; each is drawn left of its prediction.
        class_names: sequence of str or None (the legend then names classes by index).
        columns: int, images per row. alpha: float, the colours' weight. skip: classes not tinted (background,
            ignore label). title: str or None.

    Returns:
        `path`.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    images, class_maps = list(images), list(class_maps)
    if len(images) != len(class_maps) or (masks is not None and len(masks) != len(images)):
        raise ValueError(f"Received {len(images)} images, {len(class_maps)} class maps"
                         f"{'' if masks is None else f' and {len(masks)} masks'}; expected one of each per image.")
    panels = []  # (picture, caption)
    for index, (image, class_map) in enumerate(zip(images, class_maps)):
        if masks is not None:
            panels.append((blend_class_map(image, masks[index], alpha, skip), "ground truth"))
        panels.append((blend_class_map(image, class_map, alpha, skip), "prediction"))
    per_image = 1 if masks is None else 2
    columns = max(per_image, min(columns * per_image, len(panels)))
    rows = math.ceil(len(panels) / columns)
    aspect = max(np.shape(image)[0] / max(np.shape(image)[1], 1) for image in images)
    figure = Figure(figsize=(3 * columns, 3 * aspect * rows + 0.6))
    axes = figure.subplots(rows, columns, squeeze=False)
    for index, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if index < len(panels):
            ax.imshow(panels[index][0])
            if masks is not None:
                ax.set_title(panels[index][1], fontsize=8)
    shown = sorted({int(k) for maps in (class_maps, [] if masks is None else masks)
                     for m in maps for k in np.unique(m)} - set(skip))
    names = [class_names[k] if class_names is not None and k < len(class_names) else str(k) for k in shown]
    figure.legend(handles=[Patch(color=CLASS_COLORS[k % len(CLASS_COLORS)] / 255.0, label=name)
                           for k, name in zip(shown, names)], loc="lower center", ncol=min(len(shown), 8) or 1,
                  fontsize=8, frameon=False)
    if title:
        figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.6 / (3 * aspect * rows + 0.6), 1, 1))
    figure.savefig(path, dpi=DPI)
    return path
