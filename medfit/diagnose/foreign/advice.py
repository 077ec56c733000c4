"""What to change, said in the run's own framework: a Keras user gets Keras, an Ultralytics user
the trainer's arguments. `fix_for(rule, framework, family, pretrained)` is one line; the medfit
option that does the same is in `MEDFIT`.
"""

from __future__ import annotations

# Per rule: framework -> the fix in that framework's words ("*": any other framework).
FIXES: dict[str, dict[str, str]] = {
    "overfitting": {
        "keras": "EarlyStopping(monitor='val_loss', patience=5, restore_best_weights=True); "
        "augmentation that keeps the images plausible; more dropout or weight decay",
        "ultralytics": "patience=10 (early stopping on val top-1), fewer epochs, and the "
        "augmentation arguments (hsv_*, degrees, scale) kept plausible for the modality",
        "hf": "load_best_model_at_end=True with metric_for_best_model, EarlyStoppingCallback, "
        "weight_decay, fewer epochs",
        "fastai": "fewer epochs (fine_tune(n) with a smaller n), more data augmentation "
        "(aug_transforms), wd=0.1",
        "*": "keep the weights of the best val epoch (early stopping), add weight decay or "
        "augmentation that keeps the images plausible, or train fewer epochs",
    },
    "val_plateau": {
        "keras": "EarlyStopping(monitor='val_loss', patience=5, restore_best_weights=True) and "
        "ReduceLROnPlateau; the extra epochs cost time and move away from the best weights",
        "ultralytics": "patience=10 stops after 10 epochs without a better val top-1; fewer epochs",
        "hf": "EarlyStoppingCallback(early_stopping_patience=5) with load_best_model_at_end=True",
        "*": "stop a few epochs after the best val score (early stopping) and keep that "
        "epoch's weights; lower the LR when val stalls",
    },
    "val_instability": {
        "keras": "the backbone's own preprocess_input, base(x, training=False) so BatchNorm "
        "keeps its statistics, a fine-tuning LR (Adam 1e-5 after a head-only stage), a "
        "larger val set",
        "*": "a lower LR with warmup, BatchNorm statistics frozen when batches are small, a "
        "weight average (EMA), and a larger val set",
    },
    "underfitting": {
        "keras": "a pretrained backbone (keras.applications) fine-tuned after a head stage, or "
        "more capacity; check the inputs (scaling, labels) before training longer",
        "*": "a larger or pretrained model, a higher LR, less regularisation/augmentation; "
        "check that inputs and labels are what you think first",
    },
    "undertrained": {
        "keras": "more epochs (epochs=N, with EarlyStopping(restore_best_weights=True) to stop "
        "when val stops improving)",
        "ultralytics": "more epochs (epochs=N, patience=10)",
        "hf": "a larger num_train_epochs with EarlyStoppingCallback",
        "fastai": "more epochs: fine_tune(n) with a larger n",
        "*": "more epochs, with early stopping on the val score",
    },
    "lr_too_high": {
        "keras": "a 10x lower learning rate, after a head-only stage with the base frozen",
        "*": "a 10x lower learning rate with warmup; gradient clipping",
    },
    "lr_too_low": {
        "keras": "Adam(1e-3) for a head on frozen features, 1e-5 to 1e-4 when fine-tuning",
        "*": "an LR range test (lr_find) and a 10-100x larger LR",
    },
    "finetune_shock": {
        "keras": "base(inputs, training=False) so the unfrozen BatchNorm layers keep their "
        "statistics, Adam 1e-5 for the fine-tuning stage, and unfreeze the top block only",
        "*": "freeze BatchNorm statistics when unfreezing, warm the LR up from ~1/10 of its "
        "peak, and unfreeze the top of the backbone first",
    },
    "collapsed_predictions": {
        "*": "look at a batch of inputs as the model gets them (all black? a wrong path?), and "
        "at the labels; then check that the weights update (LR > 0, trainable layers)",
    },
    "resumed_or_pretrained_run": {
        "*": "log each training run to its own file (a new CSVLogger/TensorBoard folder per run) "
        "and report the one whose weights you keep",
    },
    "small_val": {
        "keras": "a validation split of at least a few hundred images (e.g. 15-20% of train, "
        "split by patient), or cross-validation; select on it, report on a separate test set",
        "*": "a validation set of a few hundred images (split by patient) or k-fold "
        "cross-validation; report on a separate test set",
    },
    "input_bound": {
        "keras": "tf.data with cache() and prefetch(tf.data.AUTOTUNE), augmentation as layers "
        "inside the model on the GPU",
        "*": "decode once and cache, more loader workers, augmentation on the GPU",
    },
}
# The medfit option or default that does the same (shown beside the fix).
MEDFIT = {
    "overfitting": "keeps the weights of the best smoothed val score and stops early "
    "(`--patience 5`)",
    "val_plateau": "early stopping on a smoothed val score (`--patience 5`) keeps the best epoch",
    "val_instability": "weight EMA and selection on the mean of the last 3 epochs (defaults)",
    "underfitting": "a pretrained timm backbone fine-tuned in two stages (the default)",
    "undertrained": "`--epochs N` with `--patience 5`",
    "lr_too_high": "`--lr auto` (range test), head-only stage first (default)",
    "lr_too_low": "`--lr auto` (range test)",
    "finetune_shock": "the two-stage recipe: BN statistics re-estimated, warmup, `--bn auto`",
    "small_val": "a stratified, patient-grouped val split of 15% (`medfit split`, the default)",
    "input_bound": "decoded images cached once, augmentation on the GPU, `--workers 8`",
}
# Backbones whose fine-tuning advice names a stage (what to unfreeze first).
TOP_STAGE = {
    "resnet": "conv5_block*",
    "resnet_v2": "conv5_block* and post_bn",
    "vgg": "block5_*",
    "densenet": "conv5_block* and bn",
    "mobilenet": "conv_pw_12/13",
    "mobilenet_v2": "block_16 and Conv_1",
    "mobilenet_v3": "the last expanded_conv blocks",
    "inception": "mixed9 and mixed10",
    "xception": "block13 and block14",
    "efficientnet": "block7* and top_*",
    "convnext": "the last stage",
}


def fix_for(rule: str, framework: str, family: str | None, pretrained: bool | None) -> str:
    table = FIXES.get(rule, {})
    text = table.get(framework) or table.get("*", "")
    if rule == "finetune_shock" and family in TOP_STAGE and framework == "keras":
        text += f" ({TOP_STAGE[family]} for this backbone)"
    if rule == "underfitting" and pretrained is False:
        text = (
            "a pretrained backbone instead of a network trained from scratch (ImageNet "
            "features transfer to medical images), fine-tuned after a head stage; " + text
        )
    return text
