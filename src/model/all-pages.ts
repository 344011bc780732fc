// Following a paginated List RPC (AIP-158) to its last page, for the clients that show a whole
// collection (amctl, the console). Browser-safe: the console bundles it.

/** The largest page the paginated RPCs serve: clients that want everything ask for it. */
export const MAX_PAGE_SIZE = 1000;

/** Every page, from the first, following next_page_token until a page has none. */
export async function* allPages<Page extends { nextPageToken: string }>(fetchPage: (pageToken: string) => Promise<Page>): AsyncGenerator<Page> {
  let pageToken = "";
  do {
    const page = await fetchPage(pageToken);
    yield page;
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
}
