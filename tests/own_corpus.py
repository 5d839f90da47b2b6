"""A small corpus that is not the bundled sample: six handbook pages of a community workshop, in Markdown."""

from __future__ import annotations

from pathlib import Path

PAGES = {
    "bikes/chain-care.md": """# Chain care

## Cleaning

A bicycle chain collects grit that wears the sprockets long before the chain itself looks dirty. Wipe the chain with
a dry rag after every wet ride, and degrease it fully once a month by running it through a clip-on scrubber filled
with a citrus solvent. Let the chain dry for at least an hour before you add new lubricant.

## Lubricating

Apply one drop of wet lube to every roller while turning the cranks backwards, then wait five minutes and wipe off
the excess from the outside plates. Lubricant left on the outside only attracts more dirt. Wax-based lubricants last
longer on dry roads but must be reapplied after any ride in the rain.

## Measuring wear

Replace the chain when a wear gauge shows 0.5 percent elongation on an eleven-speed drivetrain, or 0.75 percent on
older eight-speed chains. A stretched chain skips under load and grinds the teeth of the cassette into hooks, and a
new chain will then skip on the old cassette as well.
""",
    "bikes/brakes.md": """# Rim and disc brakes

## Pads

Rim brake pads are worn out when the grooves in their rubber are no longer visible. Toe the pads in slightly, so
that the front edge of each pad touches the rim a millimetre before the back edge; this stops the squeal that worn
or flat pads make. Disc brake pads must be replaced when the friction material is thinner than half a millimetre.

## Bleeding hydraulic brakes

Hydraulic brakes feel spongy when air has entered the hose. Bleed them with the fluid the manufacturer names:
mineral oil and DOT fluid destroy each other's seals, so never mix them. Push fluid from the caliper up to the lever
with a syringe until no bubbles appear in the funnel, then close the bleed port before removing the syringe.
""",
    "garden/compost.md": """# The compost heap

## What goes in

Mix green material, such as grass clippings and vegetable peelings, with brown material, such as dry leaves,
shredded cardboard and straw, in roughly equal volumes. Too much green material makes the heap wet and smelly;
too much brown material makes it slow. Cooked food, meat and dairy attract rats and stay out of the open heap.

## Turning and temperature

Turn the heap every two weeks with a fork to let air in. A working heap reaches between 55 and 65 degrees Celsius in
its centre within a few days of turning, which kills most weed seeds. When the centre no longer warms up after
turning, the compost is ready to mature for two more months before it goes on the beds.
""",
    "garden/bees.md": """# Keeping bees in the community garden

## Hive inspections

Inspect each hive every seven to nine days from April to July, when colonies prepare to swarm. Look for eggs, which
prove the queen was present within the last three days, and for queen cells along the bottom edges of the frames.
Work slowly from the side of the hive, never standing in front of the entrance, and use the smoker sparingly.

## Winter

Leave each colony at least eighteen kilograms of honey for the winter, and fit a mouse guard to the entrance in
October. Heft the hive from behind in January: a hive that feels light needs a block of fondant placed directly
above the cluster. Do not open the hive on days colder than ten degrees.
""",
    "workshop/woodworking.md": """# Woodworking bench rules

## Chisels and planes

Keep chisels and plane irons sharp enough to pare end grain cleanly; a blunt edge needs more force and slips. Hone
them on the 1000-grit stone, then the 6000-grit stone, and strop them on leather charged with green compound.
Always clamp the workpiece and cut away from your hands and body.

## Glue-ups

Dry-fit every joint before you open the glue. Yellow wood glue gives about ten minutes of open time at room
temperature; spread it thinly on both surfaces and clamp with even pressure until a small bead squeezes out. Leave
the clamps on for at least one hour, and do not stress the joint for a full day.
""",
    "workshop/soldering.md": """# Soldering station

## Setting up

Set the iron to 350 degrees Celsius for leaded solder and 380 degrees for lead-free solder. Clean the tip on the
brass wool rather than the wet sponge, which cools the tip and shortens its life. Switch on the fume extractor
before the first joint and keep its intake within twenty centimetres of the work.

## Making a good joint

Heat the pad and the component lead together for one to two seconds, then feed solder into the joint, not onto
the tip. A good joint is shiny and shaped like a small volcano; a dull, balled joint is cold and must be reheated.
Trim the leads after soldering, holding the cut end so that it does not fly into anyone's eyes.
""",
}


def write_own_corpus(root: Path, pages: dict[str, str] | None = None) -> Path:
    """Write the pages under `root`; returns it."""
    for rel, text in (pages or PAGES).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root
