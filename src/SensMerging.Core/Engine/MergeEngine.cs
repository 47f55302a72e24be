using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using SensMerging.Abstractions;
using SensMerging.Core.Models;
using SensMerging.Core.SafeTensors;
using TorchSharp;
using static TorchSharp.torch;

namespace SensMerging.Core.Engine;

/// <summary>
/// Streams a merge one output tensor (or row block) at a time: inputs are read lazily from the files into pooled
/// buffers, merged by the strategy, converted and written straight to the shard files, in order. Everything is
/// validated before anything is written; the output appears only when complete. Problems in the input data (NaN or
/// Inf values, counted as the inputs are read; tensors the reference model lacks) are logged and returned as
/// <see cref="MergeResult.Warnings"/>, or stop the merge with <see cref="MergeOptions.Strict"/>.
/// </summary>
public sealed partial class MergeEngine
{
    private readonly ILogger _logger;

    public MergeEngine(ILogger<MergeEngine>? logger = null) => _logger = (ILogger?)logger ?? NullLogger.Instance;

    /// <summary>Runs the merge on background threads.</summary>
    public Task<MergeResult> RunAsync(MergePlan plan, MergeOptions options, IProgress<MergeProgress>? progress = null, CancellationToken cancellationToken = default) =>
        Task.Factory.StartNew(() => Run(plan, options, progress, cancellationToken), cancellationToken, TaskCreationOptions.LongRunning, TaskScheduler.Default);

    /// <summary>Runs the merge on the calling thread plus up to <see cref="MergeOptions.MaxParallelism"/> - 1 others.</summary>
    /// <exception cref="MergeValidationException">The inputs, strategy traits or options do not fit; nothing was written.</exception>
    /// <exception cref="MergeDataException"><see cref="MergeOptions.Strict"/> and the input data has problems; nothing was written.</exception>
    /// <exception cref="OperationCanceledException">Cancelled; the temporary folder was deleted.</exception>
    public MergeResult Run(MergePlan plan, MergeOptions options, IProgress<MergeProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(plan);
        ArgumentNullException.ThrowIfNull(options);
        var total = Stopwatch.StartNew();
        var device = ResolveDevice(options.Device);
        var tensors = TensorPlanner.Plan(plan, options);
        var jobs = tensors.Jobs;
        var extraTensors = tensors.ExtraTensors;
        foreach (var warning in extraTensors)
        {
            Log.ExtraTensors(_logger, warning.Message);
        }
        foreach (var note in tensors.Notes)
        {
            Log.EmbeddingsCut(_logger, note);
        }
        var validation = total.Elapsed;
        cancellationToken.ThrowIfCancellationRequested();

        var strategy = plan.Strategy;
        var streams = Streams(strategy, jobs);
        if (!strategy.Traits.RoundsIntermediates && jobs.FirstOrDefault(j => j.IsMerged && j.ComputeDType != SafeTensorsDType.F32) is { } half)
        {
            Log.RoundedOnce(_logger, strategy.Name, half.ComputeDType.TorchDtypeName ?? half.ComputeDType.Name);
        }
        var items = jobs.SelectMany(j => MergeWorkItem.Plan(j, strategy.Traits, streams, options.BlockElements)).ToList();
        var outputPlan = jobs.Select(j => new TensorPlanEntry(j.Name, j.OutputDType, j.Shape)).ToList();
        Log.Starting(_logger, strategy.Name, jobs.Count, items.Count, options.OutputPath);

        using var output = MergedModelWriter.Create(options.OutputPath, options.Overwrite, options.WorkPath);
        var streaming = Stopwatch.StartNew();
        IReadOnlyList<WrittenFile> weightFiles;
        long bytesRead;
        MergeStageTimes stages;
        var nonFinite = new NonFiniteTally(options.Strict);
        using (var weights = new ShardedSafeTensorsWriter(output.WorkPath, outputPlan, options.ShardSizeBytes,
            new Dictionary<string, string> { ["merge_method"] = strategy.Name, ["merged_by"] = "SensMerging.Host" }, options.ComputeSha256))
        {
            using var scheduler = new MergeScheduler(plan, options, device, tensors, items, streams, weights, nonFinite, progress, streaming, cancellationToken);
            (bytesRead, stages) = scheduler.Run();
            weightFiles = weights.Complete();
        }
        var mergeDuration = streaming.Elapsed;
        cancellationToken.ThrowIfCancellationRequested();

        var reference = (plan.Base ?? plan.Models[0]).Folder.Path;
        var outDtypeName = (plan.OutputDType ?? plan.CastDType)?.TorchDtypeName;
        // vocab_size follows the embedding rows written: the output vocabulary's, or the common sub-matrix's when cut.
        var vocabSize = plan.Vocabulary?.PaddedCount
            ?? (tensors.Notes.Count > 0 ? (int?)jobs.FirstOrDefault(j => Tokenizers.EmbeddingRows.IsEmbedding(j.Name) && j.Shape.Length == 2)?.Shape[0] : null);
        output.CopyConfig(reference, outDtypeName ?? (plan.Base ?? plan.Models[0]).Folder.Config?.TorchDtype,
            plan.Layout is null ? null : tensors.LayerCount, vocabSize);
        if (plan.Vocabulary is { } vocabulary)
        {
            Tokenizers.TokenizerFiles.Write(output.WorkPath, vocabulary, options.ChatTemplate);
        }
        else
        {
            output.CopyTokenizer(options.TokenizerSource ?? reference);
            if (options.ChatTemplate is { } template)
            {
                Tokenizers.TokenizerFiles.SetChatTemplate(output.WorkPath, template);
            }
        }
        output.WriteModelCard(options.Card ?? DefaultCard(plan, options, jobs));

        var files = CollectFiles(output.WorkPath, weightFiles, options.ComputeSha256);
        output.Commit();
        var nonFiniteWarnings = nonFinite.Warnings(jobs);
        foreach (var warning in nonFiniteWarnings)
        {
            Log.NonFinite(_logger, warning.Tensors[0], warning.Model, warning.NanCount, warning.InfCount);
        }
        var result = new MergeResult(
            output.OutputPath, files, files.Sum(f => f.Size), jobs.Count, bytesRead, outputPlan.Sum(p => p.ByteLength),
            validation, mergeDuration, total.Elapsed, stages)
        {
            Warnings = [.. extraTensors, .. nonFiniteWarnings],
        };
        Log.Finished(_logger, result.OutputPath, result.TensorCount, result.TotalBytes, result.MergeDuration.TotalSeconds);
        return result;
    }

    /// <summary>
    /// True when the engine merges the strategy's tensors through the block protocol: a streaming strategy that is not
    /// elementwise, unless some tensor must round its intermediates in a half precision its sessions do not stream
    /// (mergekit's whole-tensor statistics are taken on rounded values: such tensors go whole,
    /// <see cref="StrategyTraits.RoundsIntermediates"/>; bfloat16 streams where the strategy declares
    /// <see cref="StrategyTraits.StreamsBFloat16Rounding"/>).
    /// </summary>
    private static bool Streams(IMergeStrategy strategy, IReadOnlyList<MergeJob> jobs) =>
        strategy is IStreamingMergeStrategy && !strategy.Traits.Elementwise
        && !jobs.Any(j => j.RoundsInHalfPrecision(strategy.Traits) && !(strategy.Traits.StreamsBFloat16Rounding && j.ComputeDType == SafeTensorsDType.BF16));

    private static Device ResolveDevice(string name)
    {
        var text = string.IsNullOrWhiteSpace(name) ? "cpu" : name.Trim().ToLowerInvariant();
        if (text.StartsWith("cuda", StringComparison.Ordinal))
        {
            if (!torch.cuda.is_available())
            {
                throw new MergeValidationException($"device '{name}' asked for, but CUDA is not available in this build or machine (use --device cpu)");
            }
        }
        else if (text != "cpu")
        {
            throw new MergeValidationException($"unknown device '{name}' (use cpu, cuda or cuda:N)");
        }
        return torch.device(text);
    }

    private static ModelCard DefaultCard(MergePlan plan, MergeOptions options, IReadOnlyList<MergeJob> jobs)
    {
        var inputs = new List<ModelCardInput>();
        if (plan.Base is { } b)
        {
            inputs.Add(new ModelCardInput(b.Name, "base"));
        }
        var weights = plan.Weights;
        inputs.AddRange(plan.Models.Select((m, i) => new ModelCardInput(m.Name, "expert",
            weights is null ? null : "weight " + weights[i].ToString("G6", CultureInfo.InvariantCulture))));
        var parameters = new List<KeyValuePair<string, string>>
        {
            new("seed", plan.Seed.ToString(CultureInfo.InvariantCulture)),
        };
        if (plan.CastDType is { } cd)
        {
            parameters.Add(new("dtype", cd.TorchDtypeName!));
        }
        if (plan.OutputDType is { } od)
        {
            parameters.Add(new("out_dtype", od.TorchDtypeName!));
        }
        if (jobs.Count > 0)
        {
            parameters.AddRange(jobs[0].Parameters.Global
                .OrderBy(p => p.Key, StringComparer.Ordinal)
                .Select(p => new KeyValuePair<string, string>(p.Key, Convert.ToString(p.Value, CultureInfo.InvariantCulture) ?? string.Empty)));
        }
        return new ModelCard
        {
            Title = Path.GetFileName(Path.GetFullPath(options.OutputPath).TrimEnd(Path.DirectorySeparatorChar)),
            Method = plan.Strategy.Name,
            Inputs = inputs,
            Parameters = parameters,
        };
    }

    private static List<MergedFile> CollectFiles(string folder, IReadOnlyList<WrittenFile> hashed, bool computeSha256)
    {
        var known = hashed.ToDictionary(f => Path.GetFileName(f.Path), StringComparer.Ordinal);
        var files = new List<MergedFile>();
        foreach (var path in Directory.EnumerateFiles(folder).Order(StringComparer.Ordinal))
        {
            var name = Path.GetFileName(path);
            if (known.TryGetValue(name, out var w))
            {
                files.Add(new MergedFile(name, w.Size, w.Sha256));
                continue;
            }
            using var stream = File.OpenRead(path);
            var sha = computeSha256 ? Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(stream)) : string.Empty;
            files.Add(new MergedFile(name, stream.Length, sha));
        }
        return files;
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 3003, EventName = "InputNonFinite", Level = LogLevel.Warning,
            Message = "Input tensor '{Tensor}' of model '{Model}' holds {NanCount} NaN and {InfCount} infinite value(s); merged as they are")]
        public static partial void NonFinite(ILogger logger, string tensor, string model, long nanCount, long infCount);

        [LoggerMessage(EventId = 3004, EventName = "InputExtraTensors", Level = LogLevel.Warning, Message = "Input data: {Problem}")]
        public static partial void ExtraTensors(ILogger logger, string problem);

        [LoggerMessage(EventId = 3006, EventName = "EmbeddingsCut", Level = LogLevel.Warning, Message = "Vocabularies differ: {Note}")]
        public static partial void EmbeddingsCut(ILogger logger, string note);

        [LoggerMessage(EventId = 3005, EventName = "RoundedOnce", Level = LogLevel.Warning,
            Message = "'{Method}' computes in float32 and rounds each result once to {DType}; mergekit rounds after every operation, so single values can differ from mergekit's by one unit in the last place (--compute-dtype float32 asks for this on purpose)")]
        public static partial void RoundedOnce(ILogger logger, string method, string dType);

        [LoggerMessage(EventId = 3001, EventName = "MergeStarting", Level = LogLevel.Information,
            Message = "Merging with {Method}: {TensorCount} tensors in {ItemCount} work items into {OutputPath}")]
        public static partial void Starting(ILogger logger, string method, int tensorCount, int itemCount, string outputPath);

        [LoggerMessage(EventId = 3002, EventName = "MergeFinished", Level = LogLevel.Information,
            Message = "Merged model written to {OutputPath}: {TensorCount} tensors, {TotalBytes} bytes, {Seconds:F1} s streaming")]
        public static partial void Finished(ILogger logger, string outputPath, int tensorCount, long totalBytes, double seconds);
    }
}
