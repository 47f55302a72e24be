using System.Diagnostics;
using System.Globalization;

/// <summary>
/// Times the registry's web pages and JSON API on a real <c>sensmerge serve</c> process over a filled registry: per URL
/// a warm-up, then 20 requests one after another; prints the median and maximum of the server's own time (its
/// <c>Server-Timing: app;dur=</c> header: registry queries and rendering) and the median the client saw.
/// </summary>
internal static class WebBench
{
    public static async Task RunAsync(string registryPath, IReadOnlyList<string> ids, IReadOnlyList<string> failed, IReadOnlyList<string> chained, IReadOnlyList<string> remerged, string? only = null, bool each = false)
    {
        var root = RepoRoot();
        var host = Path.Combine(root, "src", "SensMerging.Host", "bin", "Release", "net10.0", "sensmerge.dll");
        if (!File.Exists(host))
        {
            throw new FileNotFoundException("build the host first: dotnet build -c Release src/SensMerging.Host", host);
        }
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { host, "serve", "--urls", "http://127.0.0.1:0", "--registry", registryPath, "--plugins", Path.Combine(root, "plugins.json") })
        {
            start.ArgumentList.Add(a);
        }
        using var server = Process.Start(start)!;
        try
        {
            var line = await server.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(120)) ?? throw new InvalidOperationException(await server.StandardError.ReadToEndAsync());
            var endpoint = line.Split(' ')[2];
            _ = server.StandardError.ReadToEndAsync();
            using var http = new HttpClient { BaseAddress = new Uri(endpoint), Timeout = TimeSpan.FromMinutes(2) };
            var rnd = new Random(3);
            string Any() => ids[rnd.Next(ids.Count)];
            Task Time(HttpClient http, string name, Func<string> url) =>
                only is null || only.Split('|').Any(o => name.Contains(o, StringComparison.Ordinal)) ? TimeAsync(http, name, url, each) : Task.CompletedTask;
            Console.WriteLine();
            Console.WriteLine($"web pages of serve over {ids.Count:N0} merges (server time from Server-Timing; client time includes HTTP on loopback)");
            await Time(http, "models page 1 (newest 50)", () => "/");
            await Time(http, "models page 51 (offset 2500)", () => "/?offset=2500");
            await Time(http, "models ?strategy=ties", () => "/?strategy=ties");
            await Time(http, "models ?decorator=sens&status=failed", () => "/?decorator=sens&status=failed");
            await Time(http, "models ?q=poetry (~half match)", () => "/?q=poetry");
            await Time(http, "models ?q=<one id> (1 match, full scan)", () => "/?q=" + Any()[^6..]);
            await Time(http, "models ?since=<recent>", () => "/?since=" + Uri.EscapeDataString(ids[^100][2..10].Insert(4, "-").Insert(7, "-")));
            await Time(http, "models ?model=org/poetry (~5,000 uses)", () => "/?model=org/poetry");
            await Time(http, "models ?sort=score (all 10,000 sorted)", () => "/?sort=score&score=math%2Fexact_match");
            await Time(http, "model page /merges/<id>", () => "/merges/" + Any());
            await Time(http, "model page of a failed merge (no output)", () => "/merges/" + failed[rnd.Next(failed.Count)]);
            await Time(http, "model page of a re-merge (lineage chain)", () => "/merges/" + chained[rnd.Next(chained.Count)]);
            await Time(http, "model page of a re-merged merge (descendant)", () => "/merges/" + remerged[rnd.Next(remerged.Count)]);
            await Time(http, "compare two merges", () => $"/compare?left={Any()}&right={Any()}");
            await Time(http, "plugins page", () => "/plugins");
            await Time(http, "api list (newest 50)", () => "/api/registry/merges");
            await Time(http, "api show <id>", () => "/api/registry/merges/" + Any());
            await Time(http, "api diff", () => $"/api/registry/diff?left={Any()}&right={Any()}");
            await Time(http, "models page 1 again (noise check)", () => "/");
        }
        finally
        {
            server.Kill(entireProcessTree: true);
            await server.WaitForExitAsync();
        }
    }

    private static async Task TimeAsync(HttpClient http, string name, Func<string> url, bool each, int repeats = 20)
    {
        using (var warm = await http.GetAsync(url()))
        {
            warm.EnsureSuccessStatusCode();
        }
        var server = new List<double>();
        var client = new List<double>();
        long bytes = 0;
        var slowest = (Ms: -1.0, Url: string.Empty);
        for (var i = 0; i < repeats; i++)
        {
            var path = url();
            var clock = Stopwatch.StartNew();
            using var response = await http.GetAsync(path);
            var body = await response.Content.ReadAsByteArrayAsync();
            clock.Stop();
            response.EnsureSuccessStatusCode();
            bytes = body.Length;
            client.Add(clock.Elapsed.TotalMilliseconds);
            var timing = response.Headers.GetValues("Server-Timing").Single();
            var ms = double.Parse(timing[(timing.IndexOf("dur=", StringComparison.Ordinal) + 4)..], CultureInfo.InvariantCulture);
            server.Add(ms);
            if (each)
            {
                Console.WriteLine($"    #{i + 1,-2} {ms,8:F1} ms  {path}");
            }
            if (ms > slowest.Ms)
            {
                slowest = (ms, path);
            }
        }
        server.Sort();
        client.Sort();
        Console.WriteLine($"  {name,-42} server median {server[repeats / 2],8:F1} ms  max {server[^1],8:F1} ms   client median {client[repeats / 2],8:F1} ms   ({bytes / 1024.0:F0} KiB; slowest {slowest.Url})");
    }

    private static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "SensMerging.Host.sln")))
            {
                return dir.FullName;
            }
        }
        throw new InvalidOperationException("cannot find the repository root (SensMerging.Host.sln)");
    }
}
