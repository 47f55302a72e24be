using System.Buffers;
using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using Microsoft.Extensions.DependencyInjection;
using SensMerging.Hub.Client;

namespace SensMerging.HubBench;

/// <summary>
/// Where a pull's CPU goes (--profile): the same files fetched through the same HubClient with each client-side stage
/// switched on in turn (drain only, + sha256, + file write, + both) by a plain single-task loop, then
/// <see cref="HubCache.PullAsync"/> at a few parallelism and chunk settings, each next to the plain loop in the same
/// iteration, then sha256 and page-cache writes alone. CPU is user+sys of this process (server and client).
/// </summary>
internal static class StageProfile
{
    private const int BufferSize = 2 * 1024 * 1024;

    public static async Task RunAsync(string endpoint, IReadOnlyList<string> names, long total, int parallel, string root)
    {
        var inv = CultureInfo.InvariantCulture;
        double gib = total / 1073741824.0;
        using var services = new ServiceCollection()
            .AddHubClient(new HubOptions { Endpoint = endpoint, CacheDirectory = Path.Combine(root, "profile-cache") })
            .BuildServiceProvider();
        var client = services.GetRequiredService<HubClient>();
        var outDir = Directory.CreateDirectory(Path.Combine(root, "profile-out")).FullName;

        // Warm-up (JIT, connections).
        await FetchAllAsync(client, names.Take(1).ToList(), 1, false, null);

        foreach (var (label, hash, write) in new[] { ("drain", false, false), ("drain+sha256", true, false), ("drain+write", false, true), ("drain+sha256+write", true, true) })
        {
            foreach (var p in new[] { 1, parallel })
            {
                var cpu0 = CpuSeconds();
                var sw = Stopwatch.StartNew();
                await FetchAllAsync(client, names, p, hash, write ? outDir : null);
                var wall = sw.Elapsed.TotalSeconds;
                var cpu = CpuSeconds() - cpu0;
                Console.WriteLine(string.Create(inv, $"{label,-20} parallel {p}: {total / wall / 1048576.0,6:F0} MiB/s, CPU {cpu / gib:F2} s/GiB (server + client)"));
                foreach (var f in Directory.GetFiles(outDir))
                {
                    File.Delete(f);
                }
            }
        }

        foreach (var (p, chunk) in new[] { (4, 2 << 20), (2, 2 << 20), (1, 2 << 20), (4, 512 << 10), (4, 8 << 20) })
        {
            for (int run = 1; run <= 2; run++)
            {
                var cacheDir = Path.Combine(root, "profile-pull-" + run.ToString(inv));
                using var pullServices = new ServiceCollection()
                    .AddHubClient(new HubOptions { Endpoint = endpoint, CacheDirectory = cacheDir, MaxParallelDownloads = p, DownloadBufferSize = chunk })
                    .BuildServiceProvider();
                var cpu0 = CpuSeconds();
                var sw = Stopwatch.StartNew();
                await pullServices.GetRequiredService<HubCache>().PullAsync("bench/big");
                var wall = sw.Elapsed.TotalSeconds;
                var cpu1 = CpuSeconds();
                sw.Restart();
                await FetchAllAsync(client, names, p, true, outDir);
                var wallLoop = sw.Elapsed.TotalSeconds;
                Console.WriteLine(string.Create(inv, $"PullAsync parallel {p}, chunk {chunk >> 10} KiB: {total / wall / 1048576.0,6:F0} MiB/s, CPU {(cpu1 - cpu0) / gib:F2} s/GiB | plain loop drain+sha256+write {total / wallLoop / 1048576.0,6:F0} MiB/s, CPU {(CpuSeconds() - cpu1) / gib:F2} s/GiB"));
                Directory.Delete(cacheDir, recursive: true);
                foreach (var f in Directory.GetFiles(outDir))
                {
                    File.Delete(f);
                }
            }
        }

        var buffer = new byte[BufferSize];
        Random.Shared.NextBytes(buffer);
        {
            var cpu0 = CpuSeconds();
            var sw = Stopwatch.StartNew();
            using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            for (long done = 0; done < total; done += BufferSize)
            {
                sha.AppendData(buffer);
            }

            _ = sha.GetHashAndReset();
            Console.WriteLine(string.Create(inv, $"sha256 alone (1 thread): {total / sw.Elapsed.TotalSeconds / 1048576.0:F0} MiB/s, CPU {(CpuSeconds() - cpu0) / gib:F2} s/GiB"));
        }

        {
            var cpu0 = CpuSeconds();
            var sw = Stopwatch.StartNew();
            var file = Path.Combine(outDir, "write-only");
            using (var handle = File.OpenHandle(file, FileMode.Create, FileAccess.Write))
            {
                for (long done = 0; done < total; done += BufferSize)
                {
                    RandomAccess.Write(handle, buffer, done);
                }
            }

            Console.WriteLine(string.Create(inv, $"page-cache write alone (1 thread): {total / sw.Elapsed.TotalSeconds / 1048576.0:F0} MiB/s, CPU {(CpuSeconds() - cpu0) / gib:F2} s/GiB"));
            File.Delete(file);
        }
    }

    private static async Task FetchAllAsync(HubClient client, IReadOnlyList<string> names, int parallel, bool hash, string? outDir)
    {
        await Parallel.ForEachAsync(names, new ParallelOptions { MaxDegreeOfParallelism = parallel }, async (name, ct) =>
        {
            var buffer = ArrayPool<byte>.Shared.Rent(BufferSize);
            using var sha = hash ? IncrementalHash.CreateHash(HashAlgorithmName.SHA256) : null;
            using var handle = outDir is null ? null : File.OpenHandle(Path.Combine(outDir, name), FileMode.Create, FileAccess.Write);
            try
            {
                await using var response = await client.OpenFileAsync("bench/big", "main", name, 0, ct);
                long offset = 0;
                int n;
                while ((n = await response.Content.ReadAtLeastAsync(buffer.AsMemory(0, BufferSize), BufferSize, false, ct)) > 0)
                {
                    sha?.AppendData(buffer, 0, n);
                    if (handle is not null)
                    {
                        RandomAccess.Write(handle, buffer.AsSpan(0, n), offset);
                    }

                    offset += n;
                }
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
        });
    }

    private static double CpuSeconds()
    {
        var stat = File.ReadAllText("/proc/self/stat");
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        long ticks = long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture);
        return ticks / 100.0;
    }
}
