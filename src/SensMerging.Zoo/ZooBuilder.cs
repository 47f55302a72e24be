using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using SensMerging.Abstractions;
using SensMerging.Runtime.Model;
using SensMerging.Runtime.Tokenization;
using SensMerging.Zoo.Tasks;
using SensMerging.Zoo.Training;

namespace SensMerging.Zoo;

/// <summary>What <see cref="ZooBuilder.BuildAsync(string, int, ZooSize, IProgress{ZooProgress}?, CancellationToken)"/> produced.</summary>
/// <param name="Layout">Where everything is.</param>
/// <param name="Manifest">The zoo.json content.</param>
/// <param name="Reused">True when an existing zoo with the same seed and settings was reused.</param>
public sealed record ZooBuildResult(ZooLayout Layout, ZooManifest Manifest, bool Reused)
{
    /// <summary>Expert names in table order (the task names).</summary>
    public IReadOnlyList<string> Experts => Manifest.Models.Where(m => m.Task is not null).Select(m => m.Name).ToList();

    /// <summary>Task names in table order.</summary>
    public IReadOnlyList<string> Tasks => Manifest.Tasks.Select(t => t.Name).ToList();

    /// <summary>The local folder of a model (<c>base</c> or an expert).</summary>
    public string ModelPath(string model) => Layout.ModelPath(model);
}

/// <summary>
/// Builds the model zoo: generates the three task families, trains the base on the mix of their base subsets,
/// fine-tunes one expert per family from it, and writes Hugging Face repositories, task data and zoo.json.
/// A zoo with the same seed and settings whose files are all present is reused.
/// </summary>
public sealed partial class ZooBuilder
{
    private readonly ILogger _logger;

    public ZooBuilder(ILogger<ZooBuilder>? logger = null)
    {
        _logger = (ILogger?)logger ?? NullLogger.Instance;
    }

    /// <summary>Builds (or reuses) the zoo of preset <paramref name="size"/> in <paramref name="outDir"/>.</summary>
    public Task<ZooBuildResult> BuildAsync(string outDir, int seed, ZooSize size, IProgress<ZooProgress>? progress, CancellationToken cancellationToken) =>
        BuildAsync(outDir, seed, ZooSettings.For(size), progress, cancellationToken);

    /// <summary>Builds (or reuses) a zoo with explicit <paramref name="settings"/> in <paramref name="outDir"/>.</summary>
    public async Task<ZooBuildResult> BuildAsync(string outDir, int seed, ZooSettings settings, IProgress<ZooProgress>? progress, CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(outDir);
        ArgumentNullException.ThrowIfNull(settings);
        settings.Validate();
        var layout = new ZooLayout(outDir);
        var families = settings.TaskFamilies();

        var existing = await ZooManifest.TryLoadAsync(layout.ManifestPath, cancellationToken);
        if (existing is not null && IsReusable(existing, layout, seed, settings, families))
        {
            LogReusing(_logger, layout.Root, seed, settings.Size.ToString());
            progress?.Report(new ZooProgress("reuse", string.Empty, 0, 0, double.NaN));
            return new ZooBuildResult(layout, existing, Reused: true);
        }

        var watch = Stopwatch.StartNew();
        Directory.CreateDirectory(layout.Root);
        File.Delete(layout.ManifestPath);
        LogBuilding(_logger, settings.Size.ToString(), layout.Root, seed);

        progress?.Report(new ZooProgress("data", string.Empty, 0, families.Count, double.NaN));
        var splits = new List<TaskSplits>(families.Count);
        var taskEntries = new List<ZooTaskEntry>(families.Count);
        foreach (var family in families)
        {
            var split = family.Generate(seed, settings.Data);
            splits.Add(split);
            taskEntries.Add(await WriteTaskDataAsync(layout, split, cancellationToken));
        }

        var tokenizer = WordLevelTokenizer.CreateCharacterLevel();
        var config = settings.Model.ToConfig(tokenizer.VocabularySize);
        var trainer = new ZooTrainer(_logger);
        var models = new List<ZooModelEntry>(families.Count + 1);

        var baseMix = BaseMix(splits, settings.PretrainingShare);
        var basePath = layout.ModelPath(ZooLayout.BaseName);
        TrainingReport baseReport;
        if (existing is not null && IsBaseReusable(existing, layout, seed, settings) is { } reusedBase)
        {
            // Only the experts' settings changed: the base would be trained to the same weights (the build is
            // deterministic for a seed), so the one on disk is kept and only the experts are fine-tuned again.
            LogReusingBase(_logger, basePath);
            progress?.Report(new ZooProgress("reuse", ZooLayout.BaseName, reusedBase.Steps, reusedBase.Steps, reusedBase.FinalLoss));
            baseReport = reusedBase;
        }
        else
        {
            ResetFolder(basePath);
            using (var model = LlamaModel.CreateRandom(config, tokenizer, seed, new ModelLoadOptions(RequiresGrad: true)))
            {
                baseReport = await Task.Run(
                    () => trainer.Train(model, baseMix.Pools, settings.Base, settings.MaxLength, seed, ZooLayout.BaseName, progress, cancellationToken, baseMix.Weights),
                    cancellationToken);
                progress?.Report(new ZooProgress("save", ZooLayout.BaseName, baseReport.Steps, baseReport.Steps, baseReport.FinalLoss));
                await SaveModelAsync(model, tokenizer, basePath, ZooLayout.BaseName, null, null, seed, settings, baseReport, cancellationToken);
            }
        }
        models.Add(new ZooModelEntry(ZooLayout.BaseName, ZooLayout.RepoId(ZooLayout.BaseName), layout.Relative(basePath), null, null, baseReport));

        for (var i = 0; i < families.Count; i++)
        {
            var family = families[i];
            var expertPath = layout.ModelPath(family.Name);
            ResetFolder(expertPath);
            using var model = LlamaModel.Load(basePath, new ModelLoadOptions(RequiresGrad: true), cancellationToken);
            var (pools, weights) = ExpertPools(splits[i], baseMix, settings.ExpertReplay);
            using var teacher = settings.ExpertDistillation > 0 ? LlamaModel.Load(basePath, new ModelLoadOptions(RequiresGrad: false), cancellationToken) : null;
            var distillation = teacher is null
                ? null
                : new OffTaskDistillation(teacher, [.. splits.Where((_, j) => j != i).Select(s => s.Train)], settings.ExpertDistillation, settings.DistillationWeight);
            var report = await Task.Run(
                () => trainer.Train(model, pools, settings.Expert, settings.MaxLength, seed, family.Name, progress, cancellationToken, weights, distillation),
                cancellationToken);
            progress?.Report(new ZooProgress("save", family.Name, report.Steps, report.Steps, report.FinalLoss));
            await SaveModelAsync(model, tokenizer, expertPath, family.Name, family.Name, family.Description, seed, settings, report, cancellationToken);
            models.Add(new ZooModelEntry(family.Name, ZooLayout.RepoId(family.Name), layout.Relative(expertPath), family.Name, ZooLayout.RepoId(ZooLayout.BaseName), report));
        }

        watch.Stop();
        var manifest = new ZooManifest(
            ZooManifest.CurrentFormatVersion,
            seed,
            settings.Size,
            settings,
            models,
            taskEntries,
            Math.Round(watch.Elapsed.TotalSeconds, 2),
            DateTimeOffset.UtcNow);
        await manifest.SaveAsync(layout.ManifestPath, cancellationToken);
        LogBuilt(_logger, watch.Elapsed.TotalSeconds, string.Join(", ", models.Select(m => m.Repo)));
        progress?.Report(new ZooProgress("done", string.Empty, 0, 0, double.NaN));
        return new ZooBuildResult(layout, manifest, Reused: false);
    }

    /// <summary>
    /// The base model's training mix: each family's base subset of its task format with weight (1 - share) / families,
    /// and each family's raw pre-training corpus with weight share / families.
    /// </summary>
    private static TrainingMix BaseMix(IReadOnlyList<TaskSplits> splits, double pretrainingShare)
    {
        var pools = new List<IReadOnlyList<TextSample>>();
        var weights = new List<double>();
        var formats = splits.Where(s => s.BaseTrain.Count > 0).ToList();
        foreach (var split in formats)
        {
            pools.Add(split.BaseTrain);
            weights.Add((1 - pretrainingShare) / formats.Count);
        }
        if (pretrainingShare > 0)
        {
            var corpora = splits.Where(s => s.Pretraining.Count > 0).ToList();
            foreach (var split in corpora)
            {
                pools.Add(split.Pretraining);
                weights.Add(pretrainingShare / corpora.Count);
            }
        }
        return new TrainingMix(pools, weights);
    }

    /// <summary>
    /// An expert's training pools: its own task with weight 1 - replay, and the base model's mix with weight replay
    /// (rehearsal of what the base knew, so the task vector carries the new skill rather than the forgetting of the others).
    /// </summary>
    private static TrainingMix ExpertPools(TaskSplits task, TrainingMix baseMix, double replay)
    {
        if (replay <= 0)
        {
            return new TrainingMix([task.Train], [1.0]);
        }
        var total = baseMix.Weights.Sum();
        return new TrainingMix([task.Train, .. baseMix.Pools], [1 - replay, .. baseMix.Weights.Select(w => replay * w / total)]);
    }

    /// <summary>Sample pools and how often each is drawn (relative).</summary>
    private sealed record TrainingMix(IReadOnlyList<IReadOnlyList<TextSample>> Pools, IReadOnlyList<double> Weights);

    /// <summary>
    /// The training report of the base in <paramref name="manifest"/> when that base can be kept for
    /// <paramref name="settings"/>: same seed, same settings except the experts' (<see cref="ZooSettings.Expert"/>,
    /// <see cref="ZooSettings.ExpertReplay"/>, <see cref="ZooSettings.ExpertDistillation"/> and its weight), and the base's files present; otherwise null.
    /// </summary>
    private static TrainingReport? IsBaseReusable(ZooManifest manifest, ZooLayout layout, int seed, ZooSettings settings)
    {
        if (manifest.Seed != seed || manifest.Settings is null || BaseFingerprint(manifest.Settings) != BaseFingerprint(settings))
        {
            return null;
        }
        var entry = manifest.Models.FirstOrDefault(m => m.Name == ZooLayout.BaseName);
        if (entry?.Training is null || !ZooLayout.ModelFiles.All(f => File.Exists(Path.Combine(layout.ModelPath(ZooLayout.BaseName), f))))
        {
            return null;
        }
        return entry.Training;
    }

    /// <summary>The settings that determine the base model (and its card): everything but the experts' training.</summary>
    internal static string BaseFingerprint(ZooSettings settings) =>
        ZooManifest.Fingerprint(settings with { Expert = settings.Base, ExpertReplay = 0, ExpertDistillation = 0, ExpertDistillationWeight = null });

    private static bool IsReusable(ZooManifest manifest, ZooLayout layout, int seed, ZooSettings settings, IReadOnlyList<ITaskFamily> families)
    {
        if (manifest.Seed != seed || manifest.Size != settings.Size || ZooManifest.Fingerprint(manifest.Settings) != ZooManifest.Fingerprint(settings))
        {
            return false;
        }
        var names = families.Select(f => f.Name).Prepend(ZooLayout.BaseName);
        if (!names.All(n => manifest.Models.Any(m => m.Name == n) && ZooLayout.ModelFiles.All(f => File.Exists(Path.Combine(layout.ModelPath(n), f)))))
        {
            return false;
        }
        return families.All(f => File.Exists(layout.EvalPath(f.Name)) && File.Exists(layout.CalibrationPath(f.Name)) && File.Exists(layout.TrainPath(f.Name))
            && File.Exists(layout.DevPath(f.Name)));
    }

    private static async Task<ZooTaskEntry> WriteTaskDataAsync(ZooLayout layout, TaskSplits split, CancellationToken cancellationToken)
    {
        ResetFolder(layout.DataPath(split.Task));
        await JsonlSamples.WriteAsync(layout.TrainPath(split.Task), split.Train, cancellationToken);
        await JsonlSamples.WriteAsync(layout.EvalPath(split.Task), split.Eval, cancellationToken);
        await JsonlSamples.WriteAsync(layout.CalibrationPath(split.Task), split.Calibration, cancellationToken);
        await JsonlSamples.WriteAsync(layout.DevPath(split.Task), split.Dev, cancellationToken);
        return new ZooTaskEntry(
            split.Task,
            split.Train.Count,
            split.BaseTrain.Count,
            split.Eval.Count,
            split.Calibration.Count,
            split.Dev.Count,
            layout.Relative(layout.TrainPath(split.Task)),
            layout.Relative(layout.EvalPath(split.Task)),
            layout.Relative(layout.CalibrationPath(split.Task)),
            layout.Relative(layout.DevPath(split.Task)));
    }

    private static async Task SaveModelAsync(
        LlamaModel model,
        WordLevelTokenizer tokenizer,
        string path,
        string name,
        string? task,
        string? taskDescription,
        int seed,
        ZooSettings settings,
        TrainingReport report,
        CancellationToken cancellationToken)
    {
        await model.SaveAsync(path, cancellationToken);
        if (!File.Exists(Path.Combine(path, "tokenizer.json")))
        {
            tokenizer.Save(path);
        }
        await ModelCards.WriteGenerationConfigAsync(path, tokenizer, cancellationToken);
        await ModelCards.WriteReadmeAsync(path, name, task, taskDescription, seed, settings, report, cancellationToken);
    }

    private static void ResetFolder(string path)
    {
        if (Directory.Exists(path))
        {
            Directory.Delete(path, recursive: true);
        }
        Directory.CreateDirectory(path);
    }

    [LoggerMessage(EventId = 9001, Level = LogLevel.Information, Message = "Reusing the zoo in {Root} (seed {Seed}, size {Size}).")]
    private static partial void LogReusing(ILogger logger, string root, int seed, string size);

    [LoggerMessage(EventId = 9002, Level = LogLevel.Information, Message = "Building the {Size} zoo in {Root} with seed {Seed}.")]
    private static partial void LogBuilding(ILogger logger, string size, string root, int seed);

    [LoggerMessage(EventId = 9003, Level = LogLevel.Information, Message = "Reusing the base model in {Path}: seed and every setting that shapes the base are unchanged.")]
    private static partial void LogReusingBase(ILogger logger, string path);

    [LoggerMessage(EventId = 9004, Level = LogLevel.Information, Message = "Built the zoo in {Seconds:F1} s: {Models}.")]
    private static partial void LogBuilt(ILogger logger, double seconds, string models);
}
