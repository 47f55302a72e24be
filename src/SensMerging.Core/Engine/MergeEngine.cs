using System.Diagnostics;
using System.Globalization;
using System.Runtime.ExceptionServices;
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
    private const int MaxListedProblems = 20;
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
        var (jobs, extraTensors) = Validate(plan, options);
        foreach (var warning in extraTensors)
        {
            Log.ExtraTensors(_logger, warning.Message);
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
        Log.Starting(_logger, strategy.Name, jobs.Count, items.Count, options.OutputPath, null);

        using var output = MergedModelWriter.Create(options.OutputPath, options.Overwrite, options.WorkPath);
        var streaming = Stopwatch.StartNew();
        IReadOnlyList<WrittenFile> weightFiles;
        long bytesRead;
        MergeStageTimes stages;
        var nonFinite = new NonFiniteTally(options.Strict);
        using (var weights = new ShardedSafeTensorsWriter(output.WorkPath, outputPlan, options.ShardSizeBytes,
            new Dictionary<string, string> { ["merge_method"] = strategy.Name, ["merged_by"] = "SensMerging.Host" }, options.ComputeSha256))
        {
            (bytesRead, stages) = Stream(plan, options, device, jobs, items, streams, weights, nonFinite, progress, streaming, cancellationToken);
            weightFiles = weights.Complete();
        }
        var mergeDuration = streaming.Elapsed;
        cancellationToken.ThrowIfCancellationRequested();

        var reference = (plan.Base ?? plan.Models[0]).Folder.Path;
        var outDtypeName = (plan.OutputDType ?? plan.CastDType)?.TorchDtypeName;
        output.CopyConfig(reference, outDtypeName ?? (plan.Base ?? plan.Models[0]).Folder.Config?.TorchDtype,
            plan.Layout is null ? null : LayerCount(plan, jobs));
        output.CopyTokenizer(options.TokenizerSource ?? reference);
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
        Log.Finished(_logger, result.OutputPath, result.TensorCount, result.TotalBytes, result.MergeDuration.TotalSeconds, null);
        return result;
    }

    /// <summary>
    /// True when the engine merges the strategy's tensors through the block protocol: a streaming strategy that is not
    /// elementwise, unless it must round its intermediates in half precision (mergekit's whole-tensor statistics are
    /// taken on rounded values: such tensors go whole, <see cref="StrategyTraits.RoundsIntermediates"/>).
    /// </summary>
    private static bool Streams(IMergeStrategy strategy, IReadOnlyList<MergeJob> jobs) =>
        strategy is IStreamingMergeStrategy && !strategy.Traits.Elementwise && !jobs.Any(j => j.RoundsInHalfPrecision(strategy.Traits));

    /// <summary>
    /// Output buffer sets per worker: with small blocks more sets (8 Mi elements in all, at most 8 sets) let a worker run
    /// ahead of the writer thread through its bursts instead of waiting for it; large blocks keep two.
    /// </summary>
    private static int OutputSets(long capacity) => (int)Math.Clamp((8L << 20) / Math.Max(1, capacity), 2, 8);

    private (long BytesRead, MergeStageTimes Stages) Stream(
        MergePlan plan,
        MergeOptions options,
        Device device,
        IReadOnlyList<MergeJob> jobs,
        List<MergeWorkItem> items,
        bool streams,
        ShardedSafeTensorsWriter writer,
        NonFiniteTally nonFinite,
        IProgress<MergeProgress>? progress,
        Stopwatch clock,
        CancellationToken cancellationToken)
    {
        // Each worker owns buffers for items up to the block size (whole-tensor strategies: WholeTensorWorkerElements);
        // larger items (whole tensors of a strategy that is not elementwise and does not stream) share one set of large
        // buffers and are processed one at a time, so memory stays at workers x block + one largest tensor, not workers x
        // largest tensor. Streamed items only need block buffers.
        var largest = Math.Max(1, items.Where(i => i.Job.IsMerged)
            .Select(i => i.Blocks is null ? i.ElementCount : i.Blocks.Max(b => b.ElementCount)).DefaultIfEmpty(1).Max());
        // Whole-tensor strategies (neither elementwise nor streaming) are not cut into blocks: their workers' buffers have
        // their own size, so mid-size tensors still run in parallel however small the blocks are.
        var wholeTensors = !plan.Strategy.Traits.Elementwise && !streams;
        var capacity = Math.Min(largest, Math.Max(1, wholeTensors ? options.WholeTensorWorkerElements : options.BlockElements));
        var slots = jobs.Count == 0 ? 0 : jobs.Max(j => j.Inputs.Count); // a layout's tensors may have different numbers of sources
        var layerCount = LayerCount(plan, jobs);
        var workers = Math.Clamp(options.MaxParallelism, 1, Math.Max(1, items.Count));
        using var failed = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        long next = -1;
        long bytesRead = 0;
        long bytesWritten = 0;
        var tensorsDone = 0;
        var bytesTotal = jobs.Sum(j => j.OutputBytes);
        TimeSpan? lastReport = null;
        ExceptionDispatchInfo? firstError = null;
        var dispatch = new object();
        using var largeGate = new SemaphoreSlim(1, 1);
        MergeWorker? large = null;
        var owned = new List<MergeWorker>();
        long readTicks = 0, mergeTicks = 0, convertTicks = 0, waitTicks = 0;

        // Dispatch order: the largest streamed items (within 4x of the largest, e.g. embed_tokens and lm_head: their
        // statistics passes read them again) first, largest first, so they run side by side on different workers instead
        // of one of them ending the merge alone; then the rest in plan order, so most outputs still reach the files near
        // their hash frontier (hashed from memory, not read back). Outputs are written at their place in the files, so
        // the order of completion does not change the result.
        var largestStreamed = items.Where(i => i.Blocks is { Count: > 1 }).Select(i => i.ElementCount).DefaultIfEmpty(0).Max();
        bool Early(MergeWorkItem i) => i.Blocks is { Count: > 1 } && i.ElementCount * 4 >= largestStreamed;
        var order = Enumerable.Range(0, items.Count)
            .OrderBy(i => Early(items[i]) ? 0 : 1)
            .ThenByDescending(i => Early(items[i]) ? items[i].ElementCount : 0)
            .ThenBy(i => i)
            .ToArray();
        var piecesLeft = new int[jobs.Count];
        foreach (var item in items)
        {
            piecesLeft[item.Job.Index] += item.Blocks?.Count ?? 1;
        }

        bool Dispatch(out MergeWorkItem item, out bool isLarge)
        {
            lock (dispatch)
            {
                var ticket = ++next;
                if (ticket >= items.Count)
                {
                    (item, isLarge) = (null!, false);
                    return false;
                }
                item = items[order[ticket]];
                isLarge = item.Job.IsMerged && item.Blocks is null && item.ElementCount > capacity;
                if (isLarge)
                {
                    // Taken in dispatch order while dispatching, so holders of the large buffers follow one another.
                    largeGate.Wait(failed.Token);
                }
                return true;
            }
        }

        // Runs on the writer thread, pieces in the order they were posted: an item's output, or one block of a streamed item.
        void Write(MergeWorkItem piece, PendingOutput output)
        {
            var byteOffset = piece.ElementStart * piece.Job.OutputDType.Size;
            TensorBytes.ForEachSpan(output.Result, (span, at) => writer.WriteAt(piece.Job.Name, byteOffset + at, span));
            bytesWritten += TensorBytes.ByteLength(output.Result);
            if (--piecesLeft[piece.Job.Index] == 0)
            {
                tensorsDone++;
            }
            var now = clock.Elapsed;
            if (progress is not null && (lastReport is null || now - lastReport >= options.ProgressInterval || tensorsDone == jobs.Count))
            {
                lastReport = now;
                progress.Report(new MergeProgress(tensorsDone, jobs.Count, Interlocked.Read(ref bytesRead), bytesWritten, bytesTotal, now, piece.Job.Name));
            }
        }

        var pieces = new PieceWriter(Write, p => writer.IsAtFrontier(p.Job.Name, p.ElementStart * p.Job.OutputDType.Size), failed.Cancel, failed.Token);

        void Work()
        {
            var threads = torch.get_num_threads();
            try
            {
                if (options.TorchThreadsPerWorker > 0)
                {
                    torch.set_num_threads(options.TorchThreadsPerWorker);
                }
                using var noGrad = torch.no_grad();
                // Workers are disposed only after the writer stopped: their output buffers may still be queued.
                var own = new MergeWorker(plan.Strategy, device, slots, capacity, plan.Seed, layerCount, nonFinite, OutputSets(capacity));
                lock (owned)
                {
                    owned.Add(own);
                }
                while (!failed.IsCancellationRequested && Dispatch(out var item, out var isLarge))
                {
                    try
                    {
                        var worker = isLarge ? large ??= new MergeWorker(plan.Strategy, device, slots, largest, plan.Seed, layerCount, nonFinite, outputSets: 1) : own;
                        using var scope = torch.NewDisposeScope();
                        if (item.Blocks is not null)
                        {
                            worker.ProcessStreamed(item, (block, output) =>
                            {
                                // Each input byte counts once, though statistics passes read blocks again.
                                Interlocked.Add(ref bytesRead, block.ElementCount * block.Job.InputBytesPerElement);
                                output.Result.DetachFromDisposeScope();
                                pieces.Post(block, output);
                            }, failed.Token);
                        }
                        else
                        {
                            var output = worker.Process(item, failed.Token);
                            Interlocked.Add(ref bytesRead, worker.LastBytesRead);
                            output.Result.DetachFromDisposeScope();
                            pieces.Post(item, output);
                        }
                    }
                    finally
                    {
                        if (isLarge)
                        {
                            largeGate.Release();
                        }
                    }
                }
                failed.Token.ThrowIfCancellationRequested();
            }
            catch (OperationCanceledException) when (failed.IsCancellationRequested)
            {
                // Another worker failed or the caller cancelled; the first error (if any) is reported.
            }
            catch (Exception ex)
            {
                Interlocked.CompareExchange(ref firstError, ExceptionDispatchInfo.Capture(ex), null);
                failed.Cancel();
            }
            finally
            {
                torch.set_num_threads(threads);
            }
        }

        var others = Enumerable.Range(1, workers - 1)
            .Select(_ => Task.Factory.StartNew(Work, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default))
            .ToList();
        try
        {
            Work();
            Task.WaitAll(others, CancellationToken.None);
            try
            {
                pieces.Complete();
            }
            catch (Exception ex)
            {
                Interlocked.CompareExchange(ref firstError, ExceptionDispatchInfo.Capture(ex), null);
            }
        }
        finally
        {
            if (firstError is not null || failed.IsCancellationRequested)
            {
                failed.Cancel();
            }
            pieces.Complete(ignoreErrors: true);
            foreach (var w in large is null ? owned : [.. owned, large])
            {
                var (r, m, c, wait) = w.Ticks;
                readTicks += r;
                mergeTicks += m;
                convertTicks += c;
                waitTicks += wait;
                w.Dispose();
            }
        }
        firstError?.Throw();
        cancellationToken.ThrowIfCancellationRequested();
        var stages = new MergeStageTimes(Stopwatch.GetElapsedTime(0, readTicks), Stopwatch.GetElapsedTime(0, mergeTicks),
            Stopwatch.GetElapsedTime(0, convertTicks), Stopwatch.GetElapsedTime(0, waitTicks), pieces.WriteTime)
        {
            Hash = Stopwatch.GetElapsedTime(0, writer.HashTicks),
            HashReadBackBytes = writer.ReadBackBytes,
        };
        return (bytesRead, stages);
    }

    /// <summary>
    /// Checks the plan against the files and returns the jobs, and, per input, the tensors the reference model lacks (which
    /// are not merged: a warning, or with <see cref="MergeOptions.Strict"/> a <see cref="MergeDataException"/>).
    /// </summary>
    private static (List<MergeJob> Jobs, IReadOnlyList<MergeDataWarning> ExtraTensors) Validate(MergePlan plan, MergeOptions options)
    {
        var problems = new List<string>();
        var strategy = plan.Strategy ?? throw new MergeValidationException("the plan has no strategy");
        var traits = strategy.Traits;
        if (plan.Models is null || plan.Models.Count == 0)
        {
            throw new MergeValidationException("the plan has no models to merge");
        }
        if (traits.RequiresBaseModel && plan.Base is null && plan.Layout is null)
        {
            problems.Add($"merge method '{strategy.Name}' needs a base model, and none is given");
        }
        if (plan.Layout is not null && plan.Base is not null)
        {
            problems.Add("a plan with a tensor layout names each tensor's sources; it has no separate base model");
        }
        if (plan.Layout is null && plan.Models.Count < traits.MinModels)
        {
            problems.Add($"merge method '{strategy.Name}' needs at least {traits.MinModels} models besides the base, got {plan.Models.Count}");
        }
        if (plan.Layout is null && traits.MaxModels is { } max && plan.Models.Count > max)
        {
            problems.Add($"merge method '{strategy.Name}' takes at most {max} models besides the base, got {plan.Models.Count}");
        }
        if (plan.Layout is null && plan.Weights is { } w && w.Count != plan.Models.Count)
        {
            problems.Add($"{w.Count} weights given for {plan.Models.Count} models");
        }
        if (plan.OutputDType is { IsFloatingPoint: false } od)
        {
            problems.Add($"output dtype {od} is not a floating-point type (use float32, float16 or bfloat16)");
        }
        if (plan.CastDType is { IsFloatingPoint: false } cd)
        {
            problems.Add($"dtype {cd} is not a floating-point type (use float32, float16 or bfloat16)");
        }
        if (options.BlockElements < 1)
        {
            problems.Add($"block size {options.BlockElements} must be at least 1 element");
        }
        if (options.WholeTensorWorkerElements < 1)
        {
            problems.Add($"whole-tensor worker buffer size {options.WholeTensorWorkerElements} must be at least 1 element");
        }
        if (options.ShardSizeBytes < 1)
        {
            problems.Add($"shard size {options.ShardSizeBytes} must be at least 1 byte");
        }
        if (options.TokenizerSource is { } tok && !Directory.Exists(tok))
        {
            problems.Add($"tokenizer source folder '{tok}' does not exist");
        }
        try
        {
            MergedModelWriter.CheckDestination(options.OutputPath, options.Overwrite);
        }
        catch (ModelFolderException ex)
        {
            problems.Add(ex.Message);
        }
        var names = plan.Models.Select(m => m.Name).ToList();
        foreach (var dup in names.GroupBy(n => n, StringComparer.Ordinal).Where(g => g.Count() > 1))
        {
            problems.Add($"model name '{dup.Key}' is used twice");
        }
        ThrowIfAny(problems);

        if (plan.Layout is { } layout)
        {
            ThrowIfAny(problems);
            return (PlanLayout(plan, layout, traits), []);
        }
        var inputs = (plan.Base is null ? plan.Models : [plan.Base, .. plan.Models]).ToList();
        var inputNames = inputs.Select(i => i.Name).ToList();
        var reference = inputs[0];
        var configured = plan.Weights ?? [.. Enumerable.Repeat(1.0, plan.Models.Count)];
        var jobs = new List<MergeJob>(reference.Folder.Tensors.Count);
        foreach (var t in reference.Folder.Tensors)
        {
            var tensors = new List<ModelTensor>(inputs.Count) { t };
            foreach (var other in inputs.Skip(1))
            {
                if (!other.Folder.TryGetTensor(t.Name, out var o))
                {
                    problems.Add($"tensor '{t.Name}' of '{reference.Name}' is missing from model '{other.Name}'");
                    continue;
                }
                if (!TensorShape.SameAs(o.Shape, t.Shape))
                {
                    problems.Add($"tensor '{t.Name}' has shape {TensorShape.Format(t.Shape)} in '{reference.Name}' but {TensorShape.Format(o.Shape)} in '{other.Name}'");
                }
                else if (o.DType != t.DType && !(o.DType.IsFloatingPoint && t.DType.IsFloatingPoint))
                {
                    // Floating-point inputs of different dtypes are cast (mergekit's rule); anything else cannot be merged.
                    problems.Add($"tensor '{t.Name}' has dtype {t.DType} in '{reference.Name}' but {o.DType} in '{other.Name}'");
                }
                tensors.Add(o);
            }
            if (problems.Count >= MaxListedProblems)
            {
                break;
            }
            if (tensors.Count != inputs.Count)
            {
                continue;
            }
            var merged = t.DType.IsFloatingPoint;
            if (merged && t.DType.ScalarType is null)
            {
                problems.Add($"tensor '{t.Name}' has dtype {t.DType}, which TorchSharp cannot compute with");
            }
            var weights = configured;
            if (plan.WeightOverride is { } hook)
            {
                weights = hook(t.Name, configured);
                if (weights.Count != plan.Models.Count)
                {
                    problems.Add($"weight override for tensor '{t.Name}' returned {weights.Count} weights for {plan.Models.Count} models");
                }
            }
            ResolvedParameters parameters;
            try
            {
                parameters = plan.ParameterResolver?.Invoke(t.Name, plan.Models.Count) ?? ResolvedParameters.Empty;
            }
            catch (Exception ex) when (ex is ArgumentException or FormatException or InvalidOperationException or KeyNotFoundException)
            {
                problems.Add($"parameters for tensor '{t.Name}': {ex.Message}");
                continue;
            }
            if (tensors.Any(x => x.DType != t.DType && !(x.DType.IsFloatingPoint && t.DType.IsFloatingPoint)))
            {
                continue; // recorded above
            }
            var cast = merged ? plan.CastDType ?? tensors.Select(x => x.DType).Aggregate(SafeTensorsDType.Promote) : t.DType;
            jobs.Add(new MergeJob(
                jobs.Count, t.Name, [.. t.Shape], t.DType, cast, merged ? MergeJob.OutputFor(plan, cast) : t.DType, tensors, plan.Base is not null,
                merged, parameters, weights, LayerGroups.Of(t.Name), LayerGroups.BlockIndex(t.Name), inputNames)
            {
                ComputeDType = merged ? MergeJob.ComputeFor(plan, cast) : SafeTensorsDType.F32,
            });
        }
        ThrowIfAny(problems);
        var extra = new List<MergeDataWarning>();
        foreach (var other in inputs.Skip(1))
        {
            var lacking = other.Folder.Tensors.Where(t => !reference.Folder.TryGetTensor(t.Name, out _)).Select(t => t.Name).ToList();
            if (lacking.Count > 0)
            {
                extra.Add(MergeDataWarning.Extra(other.Name, reference.Name, lacking));
            }
        }
        if (options.Strict && extra.Count > 0)
        {
            throw new MergeDataException(extra);
        }
        return (jobs, extra);
    }

    /// <summary>
    /// The jobs of a <see cref="MergePlan.Layout"/>: each output tensor from its own base and sources (found under their names
    /// in their models, of one shape, floating-point dtypes cast as in the usual layout), with the strategy's model counts
    /// and base checked per tensor.
    /// </summary>
    private static List<MergeJob> PlanLayout(MergePlan plan, IReadOnlyList<PlannedTensor> layout, StrategyTraits traits)
    {
        var problems = new List<string>();
        var jobs = new List<MergeJob>(layout.Count);
        foreach (var planned in layout)
        {
            if (problems.Count >= MaxListedProblems)
            {
                break;
            }
            if (planned.Sources.Count < Math.Max(1, traits.MinModels) || (traits.MaxModels is { } max && planned.Sources.Count > max))
            {
                problems.Add($"tensor '{planned.Name}' has {planned.Sources.Count} sources; merge method '{plan.Strategy.Name}' takes {traits.MinModels}{(traits.MaxModels is { } m ? "-" + m : " or more")}");
                continue;
            }
            if (traits.RequiresBaseModel && planned.Base is null)
            {
                problems.Add($"merge method '{plan.Strategy.Name}' needs a base model, and output tensor '{planned.Name}' has none among its sources");
                continue;
            }
            if (planned.Weights.Count != planned.Sources.Count)
            {
                problems.Add($"tensor '{planned.Name}' has {planned.Weights.Count} weights for {planned.Sources.Count} sources");
                continue;
            }
            var tensors = new List<ModelTensor>(planned.Sources.Count + 1);
            IReadOnlyList<PlannedSource> sources = planned.Base is { } baseSource ? [baseSource, .. planned.Sources] : planned.Sources;
            foreach (var source in sources)
            {
                if (!source.Model.Folder.TryGetTensor(source.TensorName, out var t))
                {
                    problems.Add($"tensor '{source.TensorName}' (for output tensor '{planned.Name}') is missing from model '{source.Model.Name}'");
                    continue;
                }
                if (tensors.Count > 0 && !TensorShape.SameAs(t.Shape, tensors[0].Shape))
                {
                    problems.Add($"output tensor '{planned.Name}' has sources of shapes {TensorShape.Format(tensors[0].Shape)} and {TensorShape.Format(t.Shape)} ('{source.Model.Name}')");
                    continue;
                }
                if (tensors.Count > 0 && t.DType != tensors[0].DType && !(t.DType.IsFloatingPoint && tensors[0].DType.IsFloatingPoint))
                {
                    problems.Add($"output tensor '{planned.Name}' has sources of dtypes {tensors[0].DType} and {t.DType} ('{source.Model.Name}')");
                    continue;
                }
                tensors.Add(t);
            }
            if (tensors.Count != sources.Count)
            {
                continue;
            }
            var first = tensors[0];
            var merged = first.DType.IsFloatingPoint;
            if (merged && first.DType.ScalarType is null)
            {
                problems.Add($"tensor '{first.Name}' has dtype {first.DType}, which TorchSharp cannot compute with");
            }
            var cast = merged ? plan.CastDType ?? tensors.Select(x => x.DType).Aggregate(SafeTensorsDType.Promote) : first.DType;
            jobs.Add(new MergeJob(
                jobs.Count, planned.Name, [.. first.Shape], first.DType, cast, merged ? MergeJob.OutputFor(plan, cast) : first.DType, tensors, planned.Base is not null,
                merged, planned.Parameters, planned.Weights, LayerGroups.Of(planned.Name), LayerGroups.BlockIndex(planned.Name),
                [.. sources.Select(x => x.Model.Name)])
            {
                ComputeDType = merged ? MergeJob.ComputeFor(plan, cast) : SafeTensorsDType.F32,
            });
        }
        ThrowIfAny(problems);
        return jobs;
    }

    private static void ThrowIfAny(List<string> problems)
    {
        if (problems.Count == 0)
        {
            return;
        }
        var shown = problems.Take(MaxListedProblems).ToList();
        var more = problems.Count > shown.Count ? $"\n  ... and {problems.Count - shown.Count} more" : string.Empty;
        var message = problems.Count == 1
            ? problems[0]
            : $"{problems.Count} problems:\n  " + string.Join("\n  ", shown) + more;
        throw new MergeValidationException(message) { Problems = problems };
    }

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

    private static int LayerCount(MergePlan plan, IReadOnlyList<MergeJob> jobs)
    {
        if (plan.Layout is not null)
        {
            return jobs.Count == 0 ? 0 : jobs.Max(j => j.LayerIndex) + 1;
        }
        var configured = (plan.Base ?? plan.Models[0]).Folder.Config?.NumHiddenLayers;
        return configured ?? (jobs.Count == 0 ? 0 : jobs.Max(j => j.LayerIndex) + 1);
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

        [LoggerMessage(EventId = 3005, EventName = "RoundedOnce", Level = LogLevel.Warning,
            Message = "'{Method}' computes in float32 and rounds each result once to {DType}; mergekit rounds after every operation, so single values can differ from mergekit's by one unit in the last place (--compute-dtype float32 asks for this on purpose)")]
        public static partial void RoundedOnce(ILogger logger, string method, string dType);

        public static readonly Action<ILogger, string, int, int, string, Exception?> Starting = LoggerMessage.Define<string, int, int, string>(
            LogLevel.Information, new EventId(3001, "MergeStarting"), "Merging with {Method}: {TensorCount} tensors in {ItemCount} work items into {OutputPath}");

        public static readonly Action<ILogger, string, int, long, double, Exception?> Finished = LoggerMessage.Define<string, int, long, double>(
            LogLevel.Information, new EventId(3002, "MergeFinished"), "Merged model written to {OutputPath}: {TensorCount} tensors, {TotalBytes} bytes, {Seconds:F1} s streaming");
    }
}
