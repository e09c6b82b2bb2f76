"""MMSegmentation config files for import tests, written the way mmseg's own configs are laid
out (an fcn_hr18s config on its ``_base_`` chain for 1.x, one flat file for 0.x), with the
lab's own three classes on top. Nothing here is run: the importer must read it with ``ast``."""

from __future__ import annotations

from pathlib import Path

MODEL_FCN_HR18 = """
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    pretrained='open-mmlab://msra/hrnetv2_w18',
    backbone=dict(
        type='HRNet',
        norm_cfg=norm_cfg,
        norm_eval=False,
        extra=dict(
            stage1=dict(num_modules=1, num_branches=1, block='BOTTLENECK',
                        num_blocks=(4, ), num_channels=(64, )),
            stage2=dict(num_modules=1, num_branches=2, block='BASIC',
                        num_blocks=(4, 4), num_channels=(18, 36)),
            stage3=dict(num_modules=4, num_branches=3, block='BASIC',
                        num_blocks=(4, 4, 4), num_channels=(18, 36, 72)),
            stage4=dict(num_modules=3, num_branches=4, block='BASIC',
                        num_blocks=(4, 4, 4, 4), num_channels=(18, 36, 72, 144)))),
    decode_head=dict(
        type='FCNHead',
        in_channels=[18, 36, 72, 144],
        in_index=(0, 1, 2, 3),
        channels=sum([18, 36, 72, 144]),
        input_transform='resize_concat',
        kernel_size=1,
        num_convs=1,
        concat_input=False,
        dropout_ratio=-1,
        num_classes=19,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
"""

DATASET_CITYSCAPES = """
dataset_type = 'CityscapesDataset'
data_root = 'data/cityscapes/'
crop_size = (512, 1024)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(2048, 1024), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 1024), keep_ratio=True),
    # annotations are loaded after Resize: the ground truth is not resized
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
img_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale_factor=r, keep_ratio=True) for r in img_ratios],
        [dict(type='RandomFlip', prob=0., direction='horizontal'),
         dict(type='RandomFlip', prob=1., direction='horizontal')],
        [dict(type='LoadAnnotations')], [dict(type='PackSegInputs')]])
]
train_dataloader = dict(
    batch_size=2, num_workers=2, sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, pipeline=train_pipeline,
                 data_prefix=dict(img_path='leftImg8bit/train', seg_map_path='gtFine/train')))
val_dataloader = dict(
    batch_size=1, num_workers=4, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root,
                 data_prefix=dict(img_path='leftImg8bit/val', seg_map_path='gtFine/val'),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
"""

DEFAULT_RUNTIME = """
default_scope = 'mmseg'
env_cfg = dict(cudnn_benchmark=True, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
tta_model = dict(type='SegTTAModel')
"""

SCHEDULE_40K = """
optimizer = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0005)
optim_wrapper = dict(type='OptimWrapper', optimizer=optimizer, clip_grad=None)
param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=40000,
                        by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=40000, val_interval=4000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
"""

FCN_HR18 = """
_base_ = [
    '../_base_/models/fcn_hr18.py', '../_base_/datasets/cityscapes.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_40k.py'
]
crop_size = (512, 1024)
data_preprocessor = dict(size=crop_size)
model = dict(data_preprocessor=data_preprocessor)
"""

FCN_HR18S = """
_base_ = './fcn_hr18_4xb2-40k_cityscapes-512x1024.py'
model = dict(
    pretrained='open-mmlab://msra/hrnetv2_w18_small',
    backbone=dict(
        extra=dict(
            stage1=dict(num_blocks=(2, )),
            stage2=dict(num_blocks=(2, 2)),
            stage3=dict(num_modules=3, num_blocks=(2, 2, 2)),
            stage4=dict(num_modules=2, num_blocks=(2, 2, 2, 2)))))
"""

LAB_CONFIG = """
_base_ = './hrnet/fcn_hr18s_4xb2-40k_cityscapes-512x1024.py'
# the lab's dataset: three classes
model = dict(decode_head=dict(num_classes=3))
test_dataloader = dict(
    dataset=dict(metainfo=dict(classes=('background', 'red', 'blue'),
                               palette=[[0, 0, 0], [230, 120, 120], [100, 140, 240]])))
"""

V0_CONFIG = """
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    type='EncoderDecoder',
    pretrained='open-mmlab://msra/hrnetv2_w18_small',
    backbone=dict(type='HRNet', norm_cfg=norm_cfg, norm_eval=False),
    decode_head=dict(
        type='FCNHead', in_channels=[18, 36, 72, 144], in_index=(0, 1, 2, 3),
        channels=sum([18, 36, 72, 144]), input_transform='resize_concat', kernel_size=1,
        num_convs=1, concat_input=False, dropout_ratio=-1, num_classes=3, norm_cfg=norm_cfg,
        align_corners=ALIGN,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=TEST_CFG)
dataset_type = 'CustomDataset'
data_root = 'data/lab/'
img_norm_cfg = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='MultiScaleFlipAug',
        img_scale=(2048, 1024),
        flip=FLIP,
        transforms=[
            dict(type='Resize', keep_ratio=True),
            dict(type='RandomFlip'),
            dict(type='Normalize', **img_norm_cfg),
            PAD
            dict(type='ImageToTensor', keys=['img']),
            dict(type='Collect', keys=['img']),
        ])
]
data = dict(
    samples_per_gpu=2,
    workers_per_gpu=2,
    test=dict(type=dataset_type, data_root=data_root, img_dir='img/val', ann_dir='ann/val',
              pipeline=test_pipeline, classes=('background', 'red', 'blue'),
              palette=[[0, 0, 0], [230, 120, 120], [100, 140, 240]]))
"""


def write_v1_configs(folder: Path) -> Path:
    """The fcn_hr18s chain under ``folder``; returns the lab config built on it."""
    files = {
        "_base_/models/fcn_hr18.py": MODEL_FCN_HR18,
        "_base_/datasets/cityscapes.py": DATASET_CITYSCAPES,
        "_base_/default_runtime.py": DEFAULT_RUNTIME,
        "_base_/schedules/schedule_40k.py": SCHEDULE_40K,
        "hrnet/fcn_hr18_4xb2-40k_cityscapes-512x1024.py": FCN_HR18,
        "hrnet/fcn_hr18s_4xb2-40k_cityscapes-512x1024.py": FCN_HR18S,
        "lab_fcn_hr18s.py": LAB_CONFIG,
    }
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text, encoding="utf-8")
    return folder / "lab_fcn_hr18s.py"


def write_v0_config(
    path: Path,
    *,
    flip: bool = False,
    align_corners: bool = False,
    test_cfg: str = "dict(mode='whole')",
    pad: str = "",
) -> Path:
    """A flat mmseg 0.x config; ``pad`` is an extra pipeline step (with its trailing comma)."""
    text = (
        V0_CONFIG.replace("ALIGN", str(align_corners))
        .replace("TEST_CFG", test_cfg)
        .replace("FLIP", str(flip))
        .replace("PAD", pad)
    )
    path.write_text(text, encoding="utf-8")
    return path
