"""The tabletop scene, generated as an MJCF string in code (no asset files).

Layout (metres; z = 0 is the table top; the agentview camera looks from -y towards +y, so image-left is -x):
  - a table (box) whose top is at z = 0, no floor (the background above the table renders dark);
  - two flat, visual-only zone pads at x = -ZONE_X ("left") and x = +ZONE_X ("right");
  - NUM_PLATES flat, visual-only coloured plates (cylinders) whose positions and colours change per episode;
  - NUM_OBJECTS coloured boxes with free joints;
  - a gripper: a palm on three slide joints (x, y, z) driven by stiff position actuators (with gravity
    compensation), two finger slide joints driven by position actuators, a "wrist" camera looking down.
    The gripper's body frame is placed so that the slide-joint positions equal the end-effector point
    (between the fingertips), which is what the state and the actions refer to.
Shadows and multisampling are off (``<quality shadowsize="0" offsamples="0"/>``): on a software renderer they
dominate the rendering cost.
"""
from __future__ import annotations

# --- geometry constants shared with tasks.py / expert.py -------------------------------------------------
TABLE_HALF = (0.40, 0.30)  # table half-extent in x, y
OBJ_HALF = 0.02  # box half-size (4 cm cubes)
OBJ_MASS = 0.05
NUM_OBJECTS = 3
NUM_PLATES = 2
PLATE_RADIUS = 0.05
ZONE_X = 0.23  # zone pad centres at x = -ZONE_X (left) and +ZONE_X (right)
ZONE_HALF = (0.06, 0.2)  # zone pad half-extent in x, y
EE_OFFSET = 0.055  # palm centre is this far above the end-effector point
FINGER_RANGE = 0.04  # finger joint travel; 0 = open, FINGER_RANGE = fully closed
FINGER_Y = 0.045  # finger centre offset from the palm centre when open
FINGER_HALF = (0.01, 0.01, 0.03)
OPEN_GAP = 2 * (FINGER_Y - FINGER_HALF[1])  # gap between the finger inner faces when open (0.07)

CONTROL_DT = 0.05  # 20 Hz control
TIMESTEP = 0.005
SUBSTEPS = int(round(CONTROL_DT / TIMESTEP))  # 10 physics steps per control step


def build_mjcf(image_size: int = 64) -> str:
    off = max(640, int(image_size))
    fx, fy, fz = FINGER_HALF
    objects = "\n".join(
        f"""    <body name="obj{i}" pos="{-0.1 + 0.1 * i:.3f} 0 {OBJ_HALF}">
      <freejoint name="obj{i}_joint"/>
      <geom name="obj{i}" type="box" size="{OBJ_HALF} {OBJ_HALF} {OBJ_HALF}" mass="{OBJ_MASS}" rgba="1 0 0 1"
            friction="1.0 0.005 0.0001"/>
    </body>"""
        for i in range(NUM_OBJECTS)
    )
    plates = "\n".join(
        f"""    <geom name="plate{i}" type="cylinder" size="{PLATE_RADIUS} 0.001" pos="{-0.15 + 0.3 * i:.3f} 0.15 0.001"
          contype="0" conaffinity="0" rgba="0 0 1 1"/>"""
        for i in range(NUM_PLATES)
    )
    zx, zy = ZONE_HALF
    return f"""<mujoco model="tristream_tabletop">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{TIMESTEP}" integrator="implicitfast" cone="pyramidal"/>
  <visual>
    <quality shadowsize="0" offsamples="0"/>
    <global offwidth="{off}" offheight="{off}"/>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.55 0.55 0.55" specular="0 0 0"/>
    <rgba haze="0 0 0 1"/>
  </visual>
  <default>
    <geom solref="0.01 1" solimp="0.95 0.99 0.001"/>
  </default>
  <worldbody>
    <light name="top" directional="true" pos="0 0 1" dir="0 0.3 -1" castshadow="false" diffuse="0.35 0.35 0.35"
           specular="0 0 0"/>
    <camera name="agentview" pos="0 -0.45 0.40" xyaxes="1 0 0 0 0.66 0.75" fovy="50"/>
    <geom name="table" type="box" pos="0 0 -0.025" size="{TABLE_HALF[0]} {TABLE_HALF[1]} 0.025"
          rgba="0.50 0.45 0.40 1" friction="0.6 0.005 0.0001"/>
    <geom name="zone_left" type="box" pos="{-ZONE_X} 0 0.0005" size="{zx} {zy} 0.0005" contype="0" conaffinity="0"
          rgba="0.92 0.92 0.92 1"/>
    <geom name="zone_right" type="box" pos="{ZONE_X} 0 0.0005" size="{zx} {zy} 0.0005" contype="0" conaffinity="0"
          rgba="0.92 0.92 0.92 1"/>
    <geom name="zone_left_mark" type="box" pos="{-ZONE_X} 0 0.0011" size="0.012 {zy} 0.0005" contype="0"
          conaffinity="0" rgba="0.15 0.15 0.15 1"/>
    <geom name="zone_right_mark" type="box" pos="{ZONE_X} 0 0.0011" size="{zx} 0.012 0.0005" contype="0"
          conaffinity="0" rgba="0.15 0.15 0.15 1"/>
{plates}
{objects}
    <body name="gripper" pos="0 0 {EE_OFFSET}" gravcomp="1">
      <joint name="grip_x" type="slide" axis="1 0 0" damping="50" range="-0.35 0.35"/>
      <joint name="grip_y" type="slide" axis="0 1 0" damping="50" range="-0.3 0.3"/>
      <joint name="grip_z" type="slide" axis="0 0 1" damping="50" range="-0.05 0.35"/>
      <geom name="palm" type="box" size="0.015 0.055 0.01" mass="0.3" rgba="0.2 0.2 0.22 1"/>
      <camera name="wrist" pos="0 -0.03 -0.012" xyaxes="1 0 0 0 0.94 0.34" fovy="80"/>
      <site name="ee" pos="0 0 {-EE_OFFSET}" size="0.004" rgba="0 0 0 0"/>
      <body name="finger_l" pos="0 {FINGER_Y} -0.04" gravcomp="1">
        <joint name="finger_l" type="slide" axis="0 -1 0" range="0 {FINGER_RANGE}" damping="3"/>
        <geom name="finger_l" type="box" size="{fx} {fy} {fz}" mass="0.02" rgba="0.75 0.75 0.78 1"
              friction="1.5 0.01 0.001"/>
      </body>
      <body name="finger_r" pos="0 {-FINGER_Y} -0.04" gravcomp="1">
        <joint name="finger_r" type="slide" axis="0 1 0" range="0 {FINGER_RANGE}" damping="3"/>
        <geom name="finger_r" type="box" size="{fx} {fy} {fz}" mass="0.02" rgba="0.75 0.75 0.78 1"
              friction="1.5 0.01 0.001"/>
      </body>
    </body>
  </worldbody>
  <contact>
    <exclude body1="finger_l" body2="finger_r"/>
  </contact>
  <actuator>
    <position name="grip_x" joint="grip_x" kp="2000" ctrlrange="-0.35 0.35" forcerange="-60 60"/>
    <position name="grip_y" joint="grip_y" kp="2000" ctrlrange="-0.3 0.3" forcerange="-60 60"/>
    <position name="grip_z" joint="grip_z" kp="2000" ctrlrange="-0.05 0.35" forcerange="-60 60"/>
    <position name="finger_l" joint="finger_l" kp="150" ctrlrange="0 {FINGER_RANGE}" forcerange="-6 6"/>
    <position name="finger_r" joint="finger_r" kp="150" ctrlrange="0 {FINGER_RANGE}" forcerange="-6 6"/>
  </actuator>
</mujoco>
"""
