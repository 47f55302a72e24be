using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using SensMerging.Hub.Client;
using SensMerging.Hub.Server;
using SensMerging.HubBench;

// Hub pull benchmark: a >= 1 GiB repository of random bytes served on loopback by HubServer, pulled into a fresh
// cache by HubCache (download + sha256 + write + rename + symlinks), next to curl downloading the same bytes to
// /dev/null from the same server, in the same run.
var sizeGiB = ArgValue("--size-gib", 1.0);
var fileCount = (int)ArgValue("--files", 4);
var rounds = (int)ArgValue("--rounds", 2);
var parallel = (int)ArgValue("--parallel", 4);
var pullFirst = args.Contains("--pull-first");
var root = Path.Combine(Path.GetTempPath(), "hubbench-" + Guid.NewGuid().ToString("N")[..8]);
var repoDir = Path.Combine(root, "repos", "bench", "big");
Directory.CreateDirectory(repoDir);
var inv = CultureInfo.InvariantCulture;

try
{
    long total = (long)(sizeGiB * 1024 * 1024 * 1024);
    long perFile = total / fileCount;
    var sw = Stopwatch.StartNew();
    var buffer = new byte[4 * 1024 * 1024];
    var names = new List<string>();
    for (int i = 0; i < fileCount; i++)
    {
        var name = string.Create(inv, $"model-{i + 1:D5}-of-{fileCount:D5}.safetensors");
        names.Add(name);
        await using var fs = new FileStream(Path.Combine(repoDir, name), FileMode.Create, FileAccess.Write, FileShare.None, 0);
        var rng = new Random(1234 + i);
        for (long written = 0; written < perFile; written += buffer.Length)
        {
            rng.NextBytes(buffer);
            await fs.WriteAsync(buffer.AsMemory(0, (int)Math.Min(buffer.Length, perFile - written)));
        }
    }

    total = perFile * fileCount;
    Console.WriteLine(string.Create(inv, $"Created repo bench/big: {fileCount} files, {total / 1048576.0:F0} MiB in {sw.Elapsed.TotalSeconds:F1} s"));

    await using var server = await HubServer.StartAsync(new FolderRepositorySource(Path.Combine(root, "repos")));
    using var probe = new HttpClient { BaseAddress = server.BaseAddress, Timeout = TimeSpan.FromMinutes(10) };
    sw.Restart();
    _ = await probe.GetStringAsync("/api/models/bench/big");
    Console.WriteLine(string.Create(inv, $"Server at {server.Endpoint}; first model info (hashes {total / 1048576.0:F0} MiB once): {sw.Elapsed.TotalSeconds:F2} s"));

    var urls = names.Select(n => $"{server.Endpoint}/bench/big/resolve/main/{n}").ToList();
    if (args.Contains("--profile"))
    {
        await StageProfile.RunAsync(server.Endpoint, names, total, parallel, root);
        return;
    }

    // One pull of one file first, so that the rounds measure throughput rather than this process's one-time JIT and
    // tiering of the HTTP, DI and pull code (curl is native and pays none); its own figure is printed.
    {
        var warmCache = Path.Combine(root, "cache-warmup");
        using var warmServices = new ServiceCollection()
            .AddHubClient(new HubOptions { Endpoint = server.Endpoint, CacheDirectory = warmCache, MaxParallelDownloads = parallel })
            .BuildServiceProvider();
        var warmCpu = CpuSeconds();
        sw.Restart();
        var warm = await warmServices.GetRequiredService<HubCache>().PullAsync("bench/big", include: [names[0]]);
        Console.WriteLine(string.Create(inv,
            $"Warm-up pull of {names[0]} (first pull in this process): {warm.BytesDownloaded / sw.Elapsed.TotalSeconds / 1048576.0:F0} MiB/s, {sw.Elapsed.TotalSeconds:F2} s, CPU {CpuSeconds() - warmCpu:F2} s"));
        Directory.Delete(warmCache, recursive: true);
    }

    var results = new List<(double CurlSeq, double CurlPar, double CurlFile, double Pull)>();
    double gib = total / 1073741824.0;
    for (int round = 1; round <= rounds; round++)
    {
        // --pull-first runs the pull before the curl downloads in each round (to see whether the order matters).
        var (pullSeconds, pullCpu, pullThreads) = pullFirst ? await PullRoundAsync(round) : default;
        var cpu0 = CpuSeconds();
        double curlSeq = await CurlAsync(urls, 1, total);
        var cpu1 = CpuSeconds();
        double curlPar = await CurlAsync(urls, parallel, total);
        var cpu2 = CpuSeconds();
        var curlDir = Directory.CreateDirectory(Path.Combine(root, "curl-" + round.ToString(inv))).FullName;
        double curlFile = await CurlAsync(urls, parallel, total, curlDir);
        var cpu2b = CpuSeconds();
        Directory.Delete(curlDir, recursive: true);
        if (!pullFirst)
        {
            (pullSeconds, pullCpu, pullThreads) = await PullRoundAsync(round);
        }

        double pull = total / pullSeconds / 1048576.0;
        Console.WriteLine(string.Create(inv,
            $"Round {round}: curl sequential {curlSeq:F0} MiB/s, curl {parallel} parallel {curlPar:F0} MiB/s, curl {parallel} parallel -o file {curlFile:F0} MiB/s, HubCache.PullAsync (parallel {parallel}, sha256-verified, written to cache) {pull:F0} MiB/s ({pullSeconds:F2} s)"));
        Console.WriteLine(string.Create(inv,
            $"         CPU per GiB (server + client, user+sys): curl sequential {(cpu1 - cpu0) / gib:F2} s, curl parallel {(cpu2 - cpu1) / gib:F2} s, curl -o file (parallel, no hashing) {(cpu2b - cpu2) / gib:F2} s, pull {pullCpu / gib:F2} s; load average {File.ReadAllText("/proc/loadavg").Split(' ')[0]}"));
        var byThread = pullThreads!.Where(t => t.Value > 0).OrderByDescending(t => t.Value).Take(6)
            .Select(t => string.Create(inv, $"{t.Key} {t.Value / gib:F2}"));
        Console.WriteLine("         pull CPU s/GiB by thread name (threads alive at the end): " + string.Join(", ", byThread));
        results.Add((curlSeq, curlPar, curlFile, pull));
    }

    // One pull into a fresh cache: wall seconds, CPU seconds, CPU seconds per thread name.
    async Task<(double Seconds, double Cpu, Dictionary<string, double> Threads)> PullRoundAsync(int round)
    {
        var cacheDir = Path.Combine(root, "cache-" + round.ToString(inv));
        var cpuPull0 = CpuSeconds();
        var threads0 = CpuByThreadName();
        using var services = new ServiceCollection()
            .AddHubClient(new HubOptions { Endpoint = server.Endpoint, CacheDirectory = cacheDir, MaxParallelDownloads = parallel })
            .BuildServiceProvider();
        var cache = services.GetRequiredService<HubCache>();
        var watch = Stopwatch.StartNew();
        var snap = await cache.PullAsync("bench/big");
        var seconds = watch.Elapsed.TotalSeconds;
        var cpu = CpuSeconds() - cpuPull0;
        var threads = CpuByThreadName().ToDictionary(kv => kv.Key, kv => kv.Value - threads0.GetValueOrDefault(kv.Key), StringComparer.Ordinal);
        if (snap.BytesDownloaded != total || snap.Files.Count != fileCount)
        {
            throw new InvalidOperationException($"Pull fetched {snap.BytesDownloaded} bytes in {snap.Files.Count} files; expected {total} in {fileCount}.");
        }

        Directory.Delete(cacheDir, recursive: true);
        return (seconds, cpu, threads);
    }

    var bestSeq = results.Max(r => r.CurlSeq);
    var bestPar = results.Max(r => r.CurlPar);
    var bestPull = results.Max(r => r.Pull);
    var bestFile = results.Max(r => r.CurlFile);
    Console.WriteLine(string.Create(inv, $"Best of {rounds}: pull {bestPull:F0} MiB/s; curl sequential {bestSeq:F0} MiB/s (ratio {bestPull / bestSeq:P0}); curl parallel {bestPar:F0} MiB/s (ratio {bestPull / bestPar:P0}); curl parallel -o file {bestFile:F0} MiB/s (ratio {bestPull / bestFile:P0}); target >= 80% of curl to /dev/null"));
}
finally
{
    Directory.Delete(root, recursive: true);
}

static async Task<double> CurlAsync(IReadOnlyList<string> urls, int parallelism, long totalBytes, string? toFolder = null)
{
    var sw = Stopwatch.StartNew();
    long received = 0;
    await Parallel.ForEachAsync(urls, new ParallelOptions { MaxDegreeOfParallelism = parallelism }, async (url, ct) =>
    {
        var output = toFolder is null ? "/dev/null" : Path.Combine(toFolder, Path.GetFileName(new Uri(url).AbsolutePath));
        var psi = new ProcessStartInfo("curl", ["-s", "-f", "-o", output, "-w", "%{size_download}", url])
        {
            RedirectStandardOutput = true,
            UseShellExecute = false,
        };
        using var process = Process.Start(psi) ?? throw new InvalidOperationException("curl did not start.");
        var written = await process.StandardOutput.ReadToEndAsync(ct);
        await process.WaitForExitAsync(ct);
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"curl exited with {process.ExitCode} for {url}.");
        }

        Interlocked.Add(ref received, long.Parse(written.Trim(), CultureInfo.InvariantCulture));
    });
    if (received != totalBytes)
    {
        throw new InvalidOperationException($"curl received {received} bytes, expected {totalBytes}.");
    }

    return totalBytes / sw.Elapsed.TotalSeconds / 1048576.0;
}

// utime + stime + cutime + cstime of this process (the server and the client; curl runs as a waited-for child).
static double CpuSeconds()
{
    var stat = File.ReadAllText("/proc/self/stat");
    var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
    long ticks = long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture)
        + long.Parse(fields[13], CultureInfo.InvariantCulture) + long.Parse(fields[14], CultureInfo.InvariantCulture);
    return ticks / 100.0;
}

// utime + stime per thread name of this process, summed over threads with the same name.
static Dictionary<string, double> CpuByThreadName()
{
    var result = new Dictionary<string, double>(StringComparer.Ordinal);
    foreach (var task in Directory.EnumerateDirectories("/proc/self/task"))
    {
        try
        {
            var stat = File.ReadAllText(Path.Combine(task, "stat"));
            int open = stat.IndexOf('(', StringComparison.Ordinal);
            int close = stat.LastIndexOf(')');
            var name = stat[(open + 1)..close];
            var fields = stat[(close + 2)..].Split(' ');
            double seconds = (long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture)) / 100.0;
            result[name] = result.GetValueOrDefault(name) + seconds;
        }
        catch (IOException)
        {
            // The thread ended while being read.
        }
    }

    return result;
}

double ArgValue(string name, double fallback)
{
    var i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? double.Parse(args[i + 1], CultureInfo.InvariantCulture) : fallback;
}
