using System.CommandLine;
using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using SensMerging.Core.Engine;
using SensMerging.Core.SafeTensors;
using SensMerging.Host.Merging;
using Spectre.Console;

namespace SensMerging.Host.Cli;

/// <summary><c>sensmerge merge CONFIG.yaml --out DIR</c>.</summary>
public static class MergeCommand
{
    public static Command Create()
    {
        var config = new Argument<FileInfo>("config") { Description = "Merge config (mergekit YAML keys, plus decorators/calibration)" };
        var output = new Option<DirectoryInfo>("--out", "-o") { Description = "Output folder (Hugging Face layout)", Required = true };
        var device = new Option<string?>("--device") { Description = "cpu or cuda (default: SensMerge:Device)" };
        device.AcceptOnlyFromAmong("cpu", "cuda");
        var seed = new Option<long?>("--seed") { Description = "Seed for randomized methods (overrides the config)" };
        var shard = new Option<string>("--out-shard-size") { Description = "Largest shard, e.g. 5B, 500MB, 2GiB", DefaultValueFactory = _ => "5B" };
        var dtype = new Option<string?>("--dtype") { Description = "Output dtype: float32, float16, bfloat16 (overrides out_dtype)" };
        var compute = new Option<string?>("--compute-dtype")
        {
            Description = "float32: compute in float32 and round once, instead of mergekit's rounding after every operation when the config's dtype is bfloat16 or float16",
        };
        compute.AcceptOnlyFromAmong(MergeRunRequest.Float32Compute);
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace an existing output folder (only once the new one is complete)" };
        var maxMemory = CliApp.MaxMemoryOption();
        var strict = new Option<bool>("--strict") { Description = "Fail the merge on problems in the input data (NaN/Inf values, tensors the base lacks) instead of recording them as warnings" };
        var command = new Command("merge", "Merge a base model and experts as a config says, recording the merge in the registry")
        {
            config, output, device, seed, shard, dtype, compute, overwrite, strict, maxMemory,
        };
        command.SetAction((parse, ct) => CliApp.RunInHostAsync(parse, async (services, token) =>
        {
            var configFile = parse.GetValue(config)!;
            if (!configFile.Exists)
            {
                throw new FileNotFoundException($"merge config {configFile.FullName} does not exist");
            }
            var dtypeText = parse.GetValue(dtype);
            if (dtypeText is not null)
            {
                SafeTensorsDType.Parse(dtypeText); // a wrong --dtype fails before anything runs
            }
            var scoring = CliApp.ScoringDevice(parse, device, maxMemory, services);
            var request = new MergeRunRequest
            {
                ConfigPath = configFile.FullName,
                OutputPath = parse.GetValue(output)!.FullName,
                Device = scoring.Device,
                MaxMemoryBytes = scoring.MaxMemoryBytes,
                Seed = parse.GetValue(seed),
                ShardSizeBytes = ByteSize.Parse(parse.GetValue(shard)!),
                OutputDType = dtypeText,
                ComputeInFloat32 = parse.GetValue(compute) == MergeRunRequest.Float32Compute,
                Overwrite = parse.GetValue(overwrite),
                Strict = parse.GetValue(strict),
            };
            var pipeline = services.GetRequiredService<MergePipeline>();
            var outcome = await MergeProgressView.RunAsync(progress => pipeline.RunAsync(request, progress, token));
            Console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"merged {outcome.Result.TensorCount} tensors into {outcome.Result.OutputPath} ({outcome.Result.TotalBytes / 1e6:F1} MB, {outcome.Result.TotalDuration.TotalSeconds:F1} s); registry id {outcome.RecordId}"));
            return 0;
        }, ct));
        return command;
    }
}

/// <summary>A progress bar (tensors, bytes, rate, time left) on a terminal; plain lines every few seconds otherwise.</summary>
public static class MergeProgressView
{
    public static async Task<T> RunAsync<T>(Func<IProgress<MergeProgress>, Task<T>> work)
    {
        ArgumentNullException.ThrowIfNull(work);
        if (!AnsiConsole.Profile.Capabilities.Interactive || Console.IsErrorRedirected)
        {
            return await work(new PlainProgress());
        }
        T result = default!;
        await AnsiConsole.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .StartAsync(async ctx =>
            {
                var task = ctx.AddTask("merging", maxValue: 1);
                result = await work(new Progress<MergeProgress>(p =>
                {
                    task.MaxValue = Math.Max(1, p.BytesTotal);
                    task.Value = p.BytesWritten;
                    task.Description = Describe(p);
                }));
            });
        return result;
    }

    private static string Describe(MergeProgress p)
    {
        var seconds = Math.Max(1e-3, p.Elapsed.TotalSeconds);
        var rate = (p.BytesRead + p.BytesWritten) / seconds / 1e6;
        return string.Create(CultureInfo.InvariantCulture, $"{p.TensorsDone}/{p.TensorsTotal} tensors, {p.BytesWritten / 1e6:F0}/{p.BytesTotal / 1e6:F0} MB, {rate:F0} MB/s");
    }

    private sealed class PlainProgress : IProgress<MergeProgress>
    {
        private DateTime _last = DateTime.MinValue;

        public void Report(MergeProgress value)
        {
            var now = DateTime.UtcNow;
            if (now - _last < TimeSpan.FromSeconds(5) && value.TensorsDone != value.TensorsTotal)
            {
                return;
            }
            _last = now;
            var left = value.BytesWritten > 0
                ? TimeSpan.FromSeconds(value.Elapsed.TotalSeconds * (value.BytesTotal - value.BytesWritten) / value.BytesWritten)
                : TimeSpan.Zero;
            Console.Error.WriteLine($"progress: {Describe(value)}, {left:hh\\:mm\\:ss} left");
        }
    }
}
