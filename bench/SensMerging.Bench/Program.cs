using System.Diagnostics;
using System.Globalization;
using SensMerging.Abstractions;
using SensMerging.Bench;
using SensMerging.Core.Engine;
using SensMerging.Core.Models;
using SensMerging.Core.SafeTensors;
using SensMerging.Strategies.DareTies;
using SensMerging.Strategies.TaskArithmetic;
using SensMerging.Strategies.Ties;
using TorchSharp;

// Merge-engine benchmark: synthetic 1B-class Llama shapes, base + experts, engine vs I/O floor vs naive libtorch loop.
var options = BenchOptions.Parse(args);
var inv = CultureInfo.InvariantCulture;
Directory.CreateDirectory(options.Root);
Console.WriteLine($"sensmerge-bench: layers={options.Layers} experts={options.Experts} dtypes={string.Join(",", options.DTypes)} methods={string.Join(",", options.Methods)} parallel={options.Parallelism} block={options.BlockElements} torch_threads={torch.get_num_threads()} root={options.Root}");

if (options.TorchThreads > 0)
{
    torch.set_num_threads(options.TorchThreads);
}
var clock = Stopwatch.StartNew();
if (options.Micro)
{
    Micro.Run();
    return;
}
if (options.GenerateOnly)
{
    SyntheticModels.Make(options.Root, options.Layers, options.Experts, options.DTypes, options.ShardBytes);
    return;
}
// Generate in a child process so its allocations do not count in this process's RssAnon.
var self = Environment.ProcessPath!;
var child = new ProcessStartInfo(self) { UseShellExecute = false };
if (Path.GetFileNameWithoutExtension(self) == "dotnet")
{
    child.ArgumentList.Add(typeof(BenchOptions).Assembly.Location);
}
foreach (var a in args.Append("--generate-only"))
{
    child.ArgumentList.Add(a);
}
using (var generate = Process.Start(child)!)
{
    generate.WaitForExit();
    if (generate.ExitCode != 0)
    {
        throw new InvalidOperationException("model generation failed");
    }
}
var folders = options.DTypes.ToDictionary(d => d, d => Enumerable.Range(0, options.Experts + 1)
    .Select(m => Path.Combine(options.Root, d.Name.ToLowerInvariant(), m == 0 ? "base" : "expert" + m.ToString(inv))).ToList());
Console.WriteLine($"generated models in {clock.Elapsed.TotalSeconds:F1} s");
using var sampler = new RssAnonSampler();
Console.WriteLine($"RssAnon at start: {RssAnonSampler.CurrentKb() / 1000} MB");

var memcpy = Baselines.MemoryCopyRate();
Console.WriteLine($"memory copy: {Gb(memcpy)} GB/s");
var firstShard = Directory.GetFiles(folders[options.DTypes[0]][0], "*.safetensors").Order(StringComparer.Ordinal).First();
var (pread, mmap) = Baselines.ReadMethods(firstShard);
Console.WriteLine($"read of a cached {new FileInfo(firstShard).Length >> 20} MiB shard: positioned reads into a reused buffer {Gb(pread)} GB/s, copy out of a fresh mmap {Gb(mmap)} GB/s");

var rows = new List<string>();
var weights = new[] { 0.5, 0.3, 0.2, 0.4, 0.6 }[..options.Experts];
foreach (var dtype in options.DTypes)
{
    var models = folders[dtype].Select(ModelFolder.Open).ToList();
    try
    {
        var inputBytes = models.Sum(m => m.TotalTensorBytes);
        Console.WriteLine($"\n== {dtype}: {models.Count} models x {Mb(models[0].TotalTensorBytes)} MB ({models[0].Tensors.Count} tensors), {options.Experts} experts");
        var floor = 0.0;
        for (var rep = 0; rep < 2; rep++)
        {
            var outFloor = Path.Combine(options.Root, "floor");
            sampler.Reset();
            var (sec, bytes) = Baselines.IoFloor(models, outFloor, options.ShardBytes);
            Directory.Delete(outFloor, true);
            floor = Math.Max(floor, bytes / sec);
            Console.WriteLine($"I/O floor (read {Mb(inputBytes)} MB + write {Mb(models[0].TotalTensorBytes)} MB, no math): {Gb(bytes / sec)} GB/s ({sec:F2} s), peak RssAnon {Mb(sampler.PeakBytes)} MB");
        }
        foreach (var method in options.Methods)
        {
            IMergeStrategy strategy = method switch
            {
                "task_arithmetic" => new TaskArithmeticStrategy(),
                "ties" => new TiesStrategy(),
                "dare_ties" => new DareTiesStrategy(),
                _ => throw new ArgumentException("unknown method " + method),
            };
            var global = new Dictionary<string, object> { ["lambda"] = 1.0 };
            if (method != "task_arithmetic")
            {
                global["density"] = options.Density;
            }
            var parameters = new ResolvedParameters(global, []);
            var plan = new MergePlan
            {
                Base = new MergeInput("base", models[0]),
                Models = [.. models.Skip(1).Select((m, i) => new MergeInput("expert" + (i + 1).ToString(inv), m))],
                Strategy = strategy,
                ParameterResolver = (_, _) => parameters,
                Weights = weights,
                Seed = 42,
            };
            var outPath = Path.Combine(options.Root, "merged-" + method);
            sampler.Reset();
            var result = new MergeEngine().Run(plan, new MergeOptions
            {
                OutputPath = outPath,
                Overwrite = true,
                MaxParallelism = options.Parallelism,
                BlockElements = options.BlockElements,
                ShardSizeBytes = options.ShardBytes,
            });
            var peak = sampler.PeakBytes;
            Directory.Delete(outPath, true);
            var moved = result.BytesRead + result.TensorBytesWritten;
            var rate = moved / result.MergeDuration.TotalSeconds;
            var naiveRate = double.NaN;
            var naivePeak = 0L;
            if (options.Naive)
            {
                var outNaive = Path.Combine(options.Root, "naive");
                sampler.Reset();
                var (nsec, nbytes) = Baselines.NaiveLoop(method, models[0], models[1..], weights, options.Density, 42, outNaive, options.ShardBytes);
                naivePeak = sampler.PeakBytes;
                Directory.Delete(outNaive, true);
                naiveRate = nbytes / nsec;
            }
            var st = result.Stages;
            Console.WriteLine(string.Create(inv, $"   {dtype} {method}: {result.MergeDuration.TotalSeconds:F2} s wall; worker time read {st.Read.TotalSeconds:F2} s, math {st.Merge.TotalSeconds:F2} s, convert {st.Convert.TotalSeconds:F2} s, wait {st.WaitForTurn.TotalSeconds:F2} s, write {st.Write.TotalSeconds:F2} s"));
            var line = string.Create(inv, $"| {dtype} | {method} | {Gb(rate)} | {result.MergeDuration.TotalSeconds:F2} | {Gb(floor)} | {rate / floor * 100:F0}% | {Gb(naiveRate)} | {rate / naiveRate:F1}x | {Mb(peak)} | {(options.Naive ? Mb(naivePeak) : "-")} |");
            rows.Add(line);
            Console.WriteLine(line);
        }
    }
    finally
    {
        foreach (var m in models)
        {
            m.Dispose();
        }
    }
}

Console.WriteLine($"\n| dtype | method | engine GB/s (read+written) | engine s | I/O floor GB/s | engine/floor | naive loop GB/s | engine/naive | engine peak RssAnon MB | naive peak RssAnon MB |");
Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|");
rows.ForEach(Console.WriteLine);
Console.WriteLine(string.Create(inv, $"\nmemory copy {Gb(memcpy)} GB/s; pread {Gb(pread)} GB/s vs mmap {Gb(mmap)} GB/s; total {clock.Elapsed.TotalSeconds:F0} s"));
if (!options.Keep)
{
    Directory.Delete(options.Root, true);
}

static string Gb(double bytesPerSecond) => double.IsNaN(bytesPerSecond) ? "-" : (bytesPerSecond / 1e9).ToString("F2", CultureInfo.InvariantCulture);

static string Mb(long bytes) => (bytes / 1_000_000).ToString(CultureInfo.InvariantCulture);

internal sealed record BenchOptions(
    int Layers, int Experts, IReadOnlyList<SafeTensorsDType> DTypes, IReadOnlyList<string> Methods, string Root, int Parallelism,
    long BlockElements, long ShardBytes, double Density, bool Naive, bool Keep, int TorchThreads = 0, bool GenerateOnly = false, bool Micro = false)
{
    public static BenchOptions Parse(string[] args)
    {
        var o = new BenchOptions(2, 3, [SafeTensorsDType.F32, SafeTensorsDType.BF16], ["task_arithmetic", "ties", "dare_ties"],
            Path.Combine(Path.GetTempPath(), "sensmerging-bench"), 2, MergeOptions.DefaultBlockElements, 2_000_000_000, 0.5, true, false);
        for (var i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            o = args[i] switch
            {
                "--layers" => o with { Layers = int.Parse(Next(), CultureInfo.InvariantCulture) },
                "--experts" => o with { Experts = int.Parse(Next(), CultureInfo.InvariantCulture) },
                "--dtypes" => o with { DTypes = [.. Next().Split(',').Select(SafeTensorsDType.Parse)] },
                "--methods" => o with { Methods = Next().Split(',') },
                "--dir" => o with { Root = Next() },
                "--parallel" => o with { Parallelism = int.Parse(Next(), CultureInfo.InvariantCulture) },
                "--block" => o with { BlockElements = long.Parse(Next(), CultureInfo.InvariantCulture) },
                "--shard-size" => o with { ShardBytes = ByteSize.Parse(Next()) },
                "--density" => o with { Density = double.Parse(Next(), CultureInfo.InvariantCulture) },
                "--no-naive" => o with { Naive = false },
                "--keep" => o with { Keep = true },
                "--torch-threads" => o with { TorchThreads = int.Parse(Next(), CultureInfo.InvariantCulture) },
                "--generate-only" => o with { GenerateOnly = true },
                "--micro" => o with { Micro = true },
                _ => throw new ArgumentException($"unknown option {args[i]} (--layers N --experts N --dtypes f32,bf16 --methods a,b --dir D --parallel P --block N --shard-size 2GB --density D --no-naive --keep --torch-threads N)"),
            };
        }
        return o;
    }
}
