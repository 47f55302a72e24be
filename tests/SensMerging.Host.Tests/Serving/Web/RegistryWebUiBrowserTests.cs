using System.Security.Cryptography;
using Microsoft.Playwright;

namespace SensMerging.Host.Tests.Serving.Web;

/// <summary>
/// The registry's web pages in a real headless Chromium against a real <c>sensmerge serve</c> over real merges: list and
/// filter, model page with heatmap and lineage, lineage links, compare, download with SHA-256 check, XSS cases,
/// keyboard, phone width, no JavaScript. Saves the screenshots that docs/web-ui.md and the README show.
/// </summary>
[Collection(BrowserCollection.Name)]
public sealed class RegistryWebUiBrowserTests
{
    private readonly HubSiteFixture _site;

    public RegistryWebUiBrowserTests(HubSiteFixture site) => _site = site;

    /// <summary>
    /// Where a screenshot goes: docs/screenshots (the ones the docs show) when SENSMERGE_UPDATE_SCREENSHOTS=1, else a
    /// temporary folder, so that an ordinary test run does not leave the committed images modified.
    /// </summary>
    private static string Screenshot(string name)
    {
        var folder = Environment.GetEnvironmentVariable("SENSMERGE_UPDATE_SCREENSHOTS") == "1"
            ? Path.Combine(TestPaths.RepoRoot, "docs", "screenshots")
            : Path.Combine(Path.GetTempPath(), "sensmerge-screenshots");
        Directory.CreateDirectory(folder);
        return Path.Combine(folder, name);
    }

    [Fact]
    public async Task The_models_page_lists_every_merge_and_repository_and_filters_through_its_form()
    {
        var page = await _site.NewPageAsync();
        await page.GotoAsync("/");
        Assert.Equal(3, await page.Locator("tr.merge-row").CountAsync());
        foreach (var repo in new[] { "zoo/base", "zoo/math", "zoo/code", "zoo/evil" })
        {
            Assert.Equal(1, await page.Locator("a.repo-link", new() { HasTextString = repo }).CountAsync());
        }
        Assert.Contains("0.7200", await page.Locator($"tr[data-id='{_site.TiesId}']").InnerTextAsync(), StringComparison.Ordinal);
        await page.ScreenshotAsync(new() { Path = Screenshot("models.png"), FullPage = true });

        // Filter by decorator through the form, with the keyboard.
        await page.SelectOptionAsync("select[name=decorator]", "sens");
        await page.Locator("form.filters button").FocusAsync();
        await page.Keyboard.PressAsync("Enter");
        await Navigated(page, "decorator=sens");
        Assert.Equal([_site.SensId], await page.Locator("tr.merge-row").EvaluateAllAsync<string[]>("rows => rows.map(r => r.dataset.id)"));

        // Strategy, status, search by tag and by input model, date, sort by score, pages.
        await page.GotoAsync("/?strategy=ties");
        Assert.Equal([_site.TiesId], await Ids(page));
        await page.GotoAsync("/?status=failed");
        Assert.Equal([_site.FailedId], await Ids(page));
        await page.GotoAsync("/?q=ablation");
        Assert.Equal([_site.TiesId], await Ids(page));
        await page.GotoAsync("/?q=" + Uri.EscapeDataString("zoo/math"));
        Assert.Equal([_site.SensId], await Ids(page));
        await page.GotoAsync("/?since=2999-01-01");
        Assert.Equal(0, await page.Locator("tr.merge-row").CountAsync());
        await page.GotoAsync("/?sort=score&score=" + Uri.EscapeDataString("math/exact_match"));
        Assert.Equal([_site.TiesId, _site.SensId, _site.FailedId], await Ids(page));
        await page.GotoAsync("/?limit=2");
        Assert.Equal(2, await page.Locator("tr.merge-row").CountAsync());
        await page.Locator("a.next").ClickAsync();
        await Navigated(page, "offset=2");
        Assert.Equal([_site.SensId], await Ids(page));
        Assert.Equal(1, await page.Locator("a.prev").CountAsync());
    }

    [Fact]
    public async Task A_model_page_shows_card_files_heatmap_and_lineage_and_its_links_lead_to_the_other_merge()
    {
        var page = await _site.NewPageAsync();
        await page.GotoAsync("/merges/" + _site.SensId);
        Assert.Contains(_site.SensId, await page.Locator(".card-body").InnerTextAsync(), StringComparison.Ordinal);
        Assert.Equal("sens(task_arithmetic)", await page.Locator(".method").InnerTextAsync());
        Assert.True(await page.Locator("#file-table a.download", new() { HasTextString = "model.safetensors" }).CountAsync() == 1);
        Assert.Contains($"sensmerge hub pull merges/{_site.SensId}", await page.Locator("#pull-sensmerge").InnerTextAsync(), StringComparison.Ordinal);
        Assert.Contains($"HF_ENDPOINT={_site.Endpoint} huggingface-cli download merges/{_site.SensId}", await page.Locator("#pull-hf").InnerTextAsync(), StringComparison.Ordinal);

        // Heatmap: one cell per (expert, layer group), each with its value on hover.
        var cells = page.Locator("#coefficient-heatmap rect.cell");
        Assert.True(await cells.CountAsync() >= 2 * 4, "expected experts x layer groups cells");
        var title = await cells.First.Locator("title").TextContentAsync();
        Assert.Matches(@"× .+: -?\d+\.\d{4}", title);
        Assert.True(await page.Locator("table.scores[data-table='sensitivity']").CountAsync() == 1);
        Assert.True(await page.Locator("table.scores[data-table='tau']").CountAsync() == 1);
        Assert.Contains("0.6100", await page.Locator("#evaluation-table").InnerTextAsync(), StringComparison.Ordinal);
        Assert.Contains("decorators:", await page.Locator("pre.config").First.InnerTextAsync(), StringComparison.Ordinal);
        await page.ScreenshotAsync(new() { Path = Screenshot("model.png"), FullPage = true });

        // The lineage graph: this merge highlighted, the ties merge made from it a link, a directed edge between them.
        var graph = page.Locator("#lineage-graph svg");
        Assert.True(await graph.IsVisibleAsync());
        Assert.Equal(1, await graph.Locator($"g.current[data-id='{_site.SensId}']").CountAsync());
        Assert.Equal(1, await graph.Locator($"path.edge[data-from='{_site.SensId}'][data-to='{_site.TiesId}']").CountAsync());
        Assert.Equal("url(#lineage-arrow)", await graph.Locator("path.edge").First.GetAttributeAsync("marker-end"));
        var node = graph.Locator($"a.lineage-node[href='/merges/{_site.TiesId}']");
        Assert.Equal(1, await node.CountAsync());
        Assert.Equal(0, await node.EvaluateAsync<int>("a => a.tabIndex"));

        await page.Locator("#lineage").ScreenshotAsync(new() { Path = Screenshot("lineage.png") });

        // Follow it by keyboard: focus the node, press Enter.
        await node.FocusAsync();
        Assert.Equal(_site.TiesId, await page.EvaluateAsync<string>("document.activeElement.getAttribute('data-id')"));
        await page.Keyboard.PressAsync("Enter");
        await Navigated(page, "/merges/" + _site.TiesId);
        Assert.Equal("ties", await page.Locator(".method").InnerTextAsync());
        Assert.Equal(1, await page.Locator($"#lineage-graph g.current[data-id='{_site.TiesId}']").CountAsync());
        Assert.Equal(1, await page.Locator($"#lineage-graph path.edge[data-from='{_site.SensId}'][data-to='{_site.TiesId}']").CountAsync());

        // The lists say the same in text: the ties merge's input made by the sens merge, and its ancestry; follow that back.
        Assert.Equal(1, await page.Locator($"#inputs a.lineage-link[href='/merges/{_site.SensId}']").CountAsync());
        await page.Locator($"#ancestry a.lineage-link[href='/merges/{_site.SensId}']").First.ClickAsync();
        await Navigated(page, "/merges/" + _site.SensId);
        Assert.Equal(1, await page.Locator($"#descendants a.lineage-link[href='/merges/{_site.TiesId}']").CountAsync());

        // A repository's page links the merges that used it.
        await page.GotoAsync("/zoo/math");
        Assert.Equal(1, await page.Locator($"#descendants a[href='/merges/{_site.SensId}']").CountAsync());
    }

    [Fact]
    public async Task A_failed_merge_shows_its_error_and_no_files()
    {
        var page = await _site.NewPageAsync();
        await page.GotoAsync("/merges/" + _site.FailedId);
        Assert.Contains("failed", await page.Locator(".badge").First.InnerTextAsync(), StringComparison.Ordinal);
        Assert.Contains("strict mode", await page.Locator("#error").InnerTextAsync(), StringComparison.Ordinal);
        Assert.Equal(0, await page.Locator("a.download").CountAsync());
    }

    [Fact]
    public async Task Compare_shows_both_merges_side_by_side_with_their_differences()
    {
        var page = await _site.NewPageAsync();
        await page.GotoAsync("/compare");
        await page.FillAsync("input[name=left]", _site.SensId);
        await page.FillAsync("input[name=right]", _site.TiesId);
        await page.Locator("form.filters button").ClickAsync();
        await Navigated(page, "right=");
        var summary = await page.Locator("#compare-summary").InnerTextAsync();
        Assert.Contains("sens(task_arithmetic)", summary, StringComparison.Ordinal);
        Assert.Contains("ties", summary, StringComparison.Ordinal);
        var diff = await page.Locator("#diff").InnerTextAsync();
        Assert.Contains("method", diff, StringComparison.Ordinal);
        Assert.Contains("density", diff, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_file_downloads_through_its_link_with_the_recorded_SHA256()
    {
        var page = await _site.NewPageAsync();
        await page.GotoAsync("/merges/" + _site.TiesId);
        var link = page.Locator("#file-table a.download", new() { HasTextString = "model.safetensors" });
        var expected = await link.GetAttributeAsync("data-sha256");
        Assert.Matches("^[0-9a-f]{64}$", expected);
        Assert.Equal(expected, await page.Locator("#file-table tr", new() { HasTextString = "model.safetensors" }).Locator("td.hash").InnerTextAsync());
        var download = await page.RunAndWaitForDownloadAsync(() => link.ClickAsync());
        var saved = Path.Combine(_site.Root, "downloaded.safetensors");
        await download.SaveAsAsync(saved);
        Assert.Equal(expected, Convert.ToHexStringLower(SHA256.HashData(await File.ReadAllBytesAsync(saved))));
        Assert.Equal(await File.ReadAllBytesAsync(Path.Combine(_site.Root, "out", "ties", "model.safetensors")), await File.ReadAllBytesAsync(saved));
    }

    [Fact]
    public async Task A_script_tag_and_a_hostile_model_card_render_as_harmless_text()
    {
        var page = await _site.NewPageAsync();
        await page.GotoAsync("/?q=" + Uri.EscapeDataString("<script>"));
        Assert.Equal([_site.TiesId], await Ids(page));
        Assert.Contains(HubSiteFixture.ScriptTag, await page.Locator("span.tag").AllInnerTextsAsync());
        Assert.Equal(0, await page.Locator("main script").CountAsync());

        await page.GotoAsync("/merges/" + _site.TiesId);
        Assert.Contains(HubSiteFixture.ScriptTag, await page.Locator("p.tags").InnerTextAsync(), StringComparison.Ordinal);
        // In the lineage graph too, the tag is text (the highlighted node's title).
        Assert.Contains(HubSiteFixture.ScriptTag, await page.Locator("#lineage-graph g.current > title").TextContentAsync(), StringComparison.Ordinal);
        Assert.Equal(0, await page.Locator("script").CountAsync());

        await page.GotoAsync("/zoo/evil");
        var card = page.Locator(".card-body");
        Assert.Equal("Evil model", await card.Locator("h1").InnerTextAsync());
        // Raw HTML shows as text; no script, no element with an event handler, no javascript: link survives.
        Assert.Contains("<script>alert(1)</script>", await card.InnerTextAsync(), StringComparison.Ordinal);
        Assert.Equal(0, await page.Locator("script, img[onerror], [onerror]").CountAsync());
        Assert.Equal(0, await page.Locator("a[href^='javascript' i]").CountAsync());
        Assert.Equal(1, await card.Locator("a[href='https://example.org/ok']").CountAsync());
        Assert.Empty(_site.DialogsSeen);
    }

    [Fact]
    public async Task The_pages_work_without_JavaScript_by_keyboard_and_at_phone_width()
    {
        var noScript = await _site.NewPageAsync(javaScript: false);
        await noScript.GotoAsync("/merges/" + _site.SensId);
        Assert.True(await noScript.Locator("#coefficient-heatmap rect.cell").CountAsync() > 0);
        Assert.True(await noScript.Locator("table.scores").CountAsync() > 0);
        Assert.Equal(1, await noScript.Locator($"#lineage-graph a.lineage-node[href='/merges/{_site.TiesId}']").CountAsync());

        var page = await _site.NewPageAsync();
        await page.GotoAsync("/");
        await page.Keyboard.PressAsync("Tab");
        Assert.Equal("Skip to content", await page.EvaluateAsync<string>("document.activeElement.textContent"));
        await page.Keyboard.PressAsync("Enter");
        Assert.Equal("main", await page.EvaluateAsync<string>("document.activeElement.id"));

        var phone = await _site.NewPageAsync(width: 390, height: 844);
        foreach (var path in new[] { "/", "/merges/" + _site.SensId, "/plugins" })
        {
            await phone.GotoAsync(path);
            // The page itself does not scroll sideways (wide tables and the heatmap scroll inside their own boxes).
            var wide = await phone.EvaluateAsync<string>("""
                [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > window.innerWidth + 1 && !e.closest('.table-wrap, figure'))
                  .slice(0, 5).map(e => e.tagName + '.' + e.className).join(', ')
                """);
            Assert.True(await phone.EvaluateAsync<bool>("document.documentElement.scrollWidth <= window.innerWidth + 1"), path + " overflows a phone screen: " + wide);
        }

        // Everything comes from this server: the stylesheet is served by the project.
        var css = await page.APIRequest.GetAsync("/assets/site.css");
        Assert.Equal(200, css.Status);
        Assert.StartsWith("text/css", css.Headers["content-type"], StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_plugins_page_lists_what_the_host_loaded_with_parameters()
    {
        var page = await _site.NewPageAsync();
        await page.GotoAsync("/plugins");
        var text = await page.Locator("main").InnerTextAsync();
        Assert.Contains("sens", text, StringComparison.Ordinal);
        Assert.Contains("ties", text, StringComparison.Ordinal);
        Assert.Contains("density", text, StringComparison.Ordinal);
        Assert.True(await page.Locator(".badge-loaded").CountAsync() > 0);
    }

    /// <summary>
    /// Waits until a navigation started by a click or a key has reached a URL containing <paramref name="part"/> and its
    /// document has been parsed, asking the page itself (<c>location.href</c>, <c>document.readyState</c>). Playwright
    /// 1.64's own navigation waits do not always see navigations of this newer Chromium (the "load" wait after a click
    /// never returned; rarely, under load, not even the commit), so they are not used.
    /// </summary>
    private static async Task Navigated(IPage page, string part)
    {
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (true)
        {
            try
            {
                var state = await page.EvaluateAsync<string[]>("[location.href, document.readyState]");
                if (state[0].Contains(part, StringComparison.Ordinal) && state[1] != "loading")
                {
                    return;
                }
            }
            catch (PlaywrightException) when (DateTime.UtcNow < deadline)
            {
                // The old document went away under the evaluation: the navigation is under way.
            }
            if (DateTime.UtcNow >= deadline)
            {
                throw new TimeoutException($"the page did not navigate to a URL containing '{part}' (at {page.Url})");
            }
            await Task.Delay(100);
        }
    }

    private static Task<string[]> Ids(IPage page) =>
        page.Locator("tr.merge-row").EvaluateAllAsync<string[]>("rows => rows.map(r => r.dataset.id)");
}

/// <summary>One served site and one browser for every web test class.</summary>
[CollectionDefinition(Name)]
public sealed class BrowserCollection : ICollectionFixture<HubSiteFixture>
{
    public const string Name = "web ui";
}
