using System.Diagnostics;
using Microsoft.Playwright;
using SensMerging.Host.Tests.Merging;
using SensMerging.Registry;

namespace SensMerging.Host.Tests.Serving.Web;

/// <summary>
/// A registry made by real merges (a sens-decorated task_arithmetic merge, a ties merge of its output, a failed merge),
/// a <c>--repos</c> folder with a hostile model card, a real <c>sensmerge serve</c> process over both, and one headless
/// Chromium (Debian's <c>/usr/bin/chromium</c>, driven by Playwright; nothing downloads a browser) shared by the tests.
/// </summary>
public sealed class HubSiteFixture : IAsyncLifetime
{
    public const string ScriptTag = "<script>alert(1)</script>";

    /// <summary>The browser the tests drive; setup.sh installs it (apt-get install chromium) when missing.</summary>
    public const string ChromiumPath = "/usr/bin/chromium";

    public const string HostileCard = """
        # Evil model

        <script>alert(1)</script>
        <img src=x onerror="alert(2)">

        [click me](javascript:alert(3)) and [safe link](https://example.org/ok)

        <a href="javascript:alert(4)">raw link</a>
        """;

    private Process? _server;

    public string Root { get; } = TestPaths.NewTempDir("hubsite");

    public string RegistryPath => Path.Combine(Root, "registry", "merges.db");

    public string Repos => Path.Combine(Root, "repos");

    public string PluginsFile { get; } = Path.Combine(TestPaths.RepoRoot, "plugins.json");

    public string Endpoint { get; private set; } = string.Empty;

    /// <summary>sens(task_arithmetic) of zoo/math and zoo/code over zoo/base: has score tables and coefficients.</summary>
    public string SensId { get; private set; } = string.Empty;

    /// <summary>ties of the sens merge's output and zoo/code: its lineage leads to the sens merge. Tagged with <see cref="ScriptTag"/>.</summary>
    public string TiesId { get; private set; } = string.Empty;

    /// <summary>A merge that failed (<c>--strict</c> and an input holding NaN).</summary>
    public string FailedId { get; private set; } = string.Empty;

    public IPlaywright? Playwright { get; private set; }

    public IBrowser? Browser { get; private set; }

    public async Task InitializeAsync()
    {
        var zoo = Path.Combine(Repos, "zoo");
        TinyLlama.Write(Path.Combine(zoo, "base"), 20);
        TinyLlama.Write(Path.Combine(zoo, "math"), 21);
        TinyLlama.Write(Path.Combine(zoo, "code"), 22);
        var mathData = TinyLlama.Calibration(Path.Combine(Root, "math.jsonl"), "add", 20);
        var codeData = TinyLlama.Calibration(Path.Combine(Root, "code.jsonl"), "print", 20);
        Directory.CreateDirectory(Path.Combine(zoo, "evil"));
        await File.WriteAllTextAsync(Path.Combine(zoo, "evil", "README.md"), HostileCard);
        await File.WriteAllTextAsync(Path.Combine(zoo, "evil", "config.json"), "{\"model_type\": \"llama\"}");

        var sensOut = Path.Combine(Root, "out", "sens");
        SensId = await MergeAsync("sens.yaml", $$"""
            merge_method: task_arithmetic
            base_model: {{Path.Combine(zoo, "base")}}
            models:
              - model: {{Path.Combine(zoo, "math")}}
                calibration: {path: {{mathData}}, samples: 10, max_length: 32}
              - model: {{Path.Combine(zoo, "code")}}
                calibration: {path: {{codeData}}, samples: 10, max_length: 32}
            decorators:
              - name: sens
            """, sensOut);
        TiesId = await MergeAsync("ties.yaml", $$"""
            merge_method: ties
            base_model: {{Path.Combine(zoo, "base")}}
            parameters: {density: 0.5, weight: 0.5}
            models:
              - model: {{sensOut}}
              - model: {{Path.Combine(zoo, "code")}}
            """, Path.Combine(Root, "out", "ties"));
        // A real failure: --strict refuses an input that holds NaN values (the record is written first, then failed).
        var plain = Path.Combine(Root, "plain");
        var baseWeights = TinyModels.Write(Path.Combine(plain, "base"), 1);
        TinyModels.Write(Path.Combine(plain, "poisoned"), 2, baseWeights, edit: (name, values) => values[0] = float.NaN);
        var (exit, stdout, _) = await SensMergeAsync("merge", Config("failed.yaml",
                $"merge_method: task_arithmetic\nbase_model: {Path.Combine(plain, "base")}\nmodels:\n  - model: {Path.Combine(plain, "poisoned")}\n"),
            "--out", Path.Combine(Root, "out", "failed"), "--strict");
        Assert.True(exit != 0, "the strict merge of a NaN input should fail: " + stdout);

        using (var registry = LiteDbMergeRegistry.Open(new RegistryOptions { Path = RegistryPath }))
        {
            FailedId = (await registry.ListAsync(new MergeQuery { Status = MergeStatus.Failed })).Single().Id;
            await registry.UpdateAsync(TiesId, r => r with { Tags = ["ablation", ScriptTag] });
            await registry.UpdateAsync(SensId, r => r with { Tags = ["demo"] });
            var now = DateTime.UtcNow;
            await registry.AddEvaluationAsync(SensId, new EvaluationResult(sensOut, "math", "exact_match", 0.61, 50, now));
            await registry.AddEvaluationAsync(TiesId, new EvaluationResult(Path.Combine(Root, "out", "ties"), "math", "exact_match", 0.72, 50, now));
        }

        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { TestPaths.HostDll, "serve", "--urls", "http://127.0.0.1:0", "--repos", Repos, "--registry", RegistryPath, "--plugins", PluginsFile })
        {
            start.ArgumentList.Add(a);
        }
        _server = Process.Start(start)!;
        var line = await _server.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(60))
            ?? throw new InvalidOperationException(await _server.StandardError.ReadToEndAsync());
        Endpoint = line.Split(' ')[2];
        _ = _server.StandardError.ReadToEndAsync();

        if (!File.Exists(ChromiumPath))
        {
            throw new InvalidOperationException($"{ChromiumPath} is missing: run scripts/setup.sh (as root it installs Debian's chromium) or apt-get install chromium");
        }
        Playwright = await Microsoft.Playwright.Playwright.CreateAsync();
        Browser = await Playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions
        {
            ExecutablePath = ChromiumPath,
            Headless = true,
            Args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        });
    }

    public async Task DisposeAsync()
    {
        if (Browser is not null)
        {
            await Browser.DisposeAsync();
        }
        Playwright?.Dispose();
        if (_server is not null)
        {
            _server.Kill(entireProcessTree: true);
            await _server.WaitForExitAsync();
            _server.Dispose();
        }
        Directory.Delete(Root, recursive: true);
    }

    /// <summary>A new browser page at a laptop size, failing the test on any JavaScript dialog (none of the pages runs script).</summary>
    public async Task<IPage> NewPageAsync(bool javaScript = true, int width = 1280, int height = 900)
    {
        var context = await Browser!.NewContextAsync(new BrowserNewContextOptions
        {
            BaseURL = Endpoint,
            JavaScriptEnabled = javaScript,
            ViewportSize = new ViewportSize { Width = width, Height = height },
            AcceptDownloads = true,
        });
        // Generous: the machines that run the suite are shared and slow.
        context.SetDefaultTimeout(60_000);
        context.SetDefaultNavigationTimeout(60_000);
        var page = await context.NewPageAsync();
        page.Dialog += (_, dialog) => DialogsSeen.Add(dialog.Message);
        return page;
    }

    /// <summary>Messages of every dialog any page opened (an executed <c>alert</c> would land here).</summary>
    public System.Collections.Concurrent.ConcurrentBag<string> DialogsSeen { get; } = [];

    public Task<(int ExitCode, string StdOut, string StdErr)> SensMergeAsync(params string[] args) =>
        Processes.SensMergeAsync([.. args, "--plugins", PluginsFile, "--registry", RegistryPath]);

    private async Task<string> MergeAsync(string name, string yaml, string output)
    {
        var (exit, stdout, stderr) = await SensMergeAsync("merge", Config(name, yaml), "--out", output);
        Assert.True(exit == 0, stderr + stdout);
        return stdout.Split("registry id ")[1].Trim();
    }

    private string Config(string name, string yaml)
    {
        var path = Path.Combine(Root, name);
        File.WriteAllText(path, yaml);
        return path;
    }
}
