"""HTML of the inference report's cards: one per image on its item's page, one per image and tag on
the tag pages.

A report has a card for every image it shows, and six or more for each on the tag pages. A Jinja
template spends about a microsecond on every value it prints (an attribute lookup, an escape, a
step of its generator): printed there, the cards were most of a report's build, which a curator
waits for after every run. Here each card is one f-string.

The escaping is the templates': every value that comes from outside (keys, item names, tags,
labels, paths) is printed through `e` (markupsafe's escape, which Jinja's autoescape calls) or
`href` (percent-encoded, then escaped); numbers are formatted here. The pages' shells, and all
that is printed once per page, stay in templates/.
"""

from markupsafe import Markup, escape

from tagestimate.review.text import href, json_text, tag_name


def e(value):
    """markupsafe's escape, given back as it is when there is nothing to escape: most keys, paths and
    tags, and a report prints about 60 values per image (0.1 microsecond instead of 0.4)."""
    text = str(value)
    if "&" in text or "<" in text or ">" in text or '"' in text or "'" in text:
        return escape(text)
    return text


def item_card(card, item_name, border):
    """A card of an item page (pages.card's fields, plus source, image, anchor and similar);
    item_name and border: the page's, escaped once by the caller."""
    review = ""
    if card.image:
        review = f' data-review-image="{e(card.image)}" data-review-item="{item_name}"'
    picture = (f'<img src="{e(href(card.thumb))}" alt="{e(card.key)}" loading="lazy">' if card.thumb
               else '<span class="missing">no preview</span>')
    if card.source:
        picture = f'<a href="{e(href(card.source))}">{picture}</a>'
    chips = "".join(chip_html(chip, border) for chip in card.chips) or '<span class="none">no tag</span>'
    below = "".join(f'<span class="tag below" data-review-suggest="{e(label.tag)}" title="borderline: below the '
                    f'threshold {label.threshold:.2f}, so not a tag"><bdi>{e(tag_name(label.tag))}</bdi> '
                    f'{label.value:.3f} &#9662;</span>' for label in card.below)
    return (f'<figure class="card{" review-card" if card.image else ""}" id="{e(card.anchor)}"{review} '
            f'data-t="{e(json_text(card.tags))}" data-p="{e(json_text(card.probabilities))}"><span class="pic">'
            f'{picture}</span><figcaption><div class="key"><bdi>{e(card.key)}</bdi></div>{chips}{below}'
            f'{similar_links(card.similar)}<div class="camnote"></div></figcaption></figure>\n')


def chip_html(chip, border):
    """One tag of a card: its confidence, and its Grad-CAM overlay where it has one."""
    near = " near" if chip.near else ""
    shown = f'<bdi>{e(tag_name(chip.tag))}</bdi> {chip.confidence:.3f}</span>'
    tag = e(chip.tag)
    if chip.cam:
        flat = ' data-flat="1"' if chip.flat else ""
        return (f'<span class="tag cam{near}" title="hover or click: what the model looked at for {tag}" '
                f'data-tag="{tag}" data-review-tag="{tag}" data-cam="{e(href(chip.cam))}"{flat}>{shown}')
    title = f' title="borderline: within {border} of the threshold {chip.threshold:.2f}"' if chip.near else ""
    return f'<span class="tag{near}" data-review-tag="{tag}"{title}>{shown}'


def similar_links(similar):
    """A card's "similar" element: its nearest neighbours (explore.Collection.similar), each a link
    to its card. Their hrefs are made of safe names only ([A-Za-z0-9._-], thumbs.safe_name), so they
    need no percent-encoding."""
    if not similar:
        return ""
    links = "".join(
        f'<a class="sim" href="{e(s.href)}#{e(s.anchor)}" title="{e(s.item)} / {e(s.key)}: similarity {s.score:.3f}">'
        + (f'<img src="{e(s.thumb)}" alt="{e(s.key)}" loading="lazy">' if s.thumb
           else f'<span class="nothumb"><bdi>{e(s.key)}</bdi></span>') + "</a>"
        for s in similar)
    return f'<details class="similar"><summary>similar ({len(similar)})</summary>{links}</details>'


def tag_card_body(item, key, thumb, link, anchor):
    """What a tag page's card shows of its image (thumbnail, key, item, the link to its item page's
    card), the same on the page of each of its tags: made once per image, then given to tag_card."""
    picture = (f'<img src="{e(href(thumb))}" alt="{e(key)}" loading="lazy">' if thumb
               else '<span class="missing">no preview</span>')
    return (f'<span class="pic"><a href="{e(href(link))}#{e(anchor)}">{picture}</a></span><figcaption><div '
            f'class="key"><bdi>{e(key)}</bdi></div><div class="item"><bdi>{e(item)}</bdi></div>\n<span class="tag"><bdi>')


def tag_card(confidence, body, label):
    """A card of a tag page: its image's tag_card_body with its confidence; label: the tag's name, escaped."""
    return (f'<figure class="card tagcard" data-c="{confidence:.4f}">{body}{label}</bdi> {confidence:.3f}</span>'
            '</figcaption></figure>\n')


def gallery(cards, render_one, *args):
    """The cards of a page as one piece of markup for its template."""
    return Markup("".join(render_one(card, *args) for card in cards))
