// A fake OpenID Connect provider for the tests, without the internet. vitest.config.ts routes
// every outbound fetch of the worker (miniflare's outboundService) to handleProviderRequest(), which
// serves the JWKS of these fixed keys at http://127.0.0.1:9/<provider>/keys; the tests sign ID
// tokens with the private halves. Imported both by vitest.config.ts (Node) and by the tests
// (workerd): plain data and standard Request/Response only.
//
// These keys are test fixtures, published here on purpose: never configure them anywhere else.

export const PROVIDER_ORIGIN = 'http://127.0.0.1:9'

export interface TestJwk {
  kty: string
  kid: string
  alg: 'RS256' | 'ES256'
  use: 'sig'
  [member: string]: string
}

export const PRIVATE_KEYS: Record<string, TestJwk> = {
  'apple-1': {
    kty: 'RSA',
    n: '3LBeAbtbBFkHcv6yWUg9aOVQZHyscY5fxCM1mkDGr53NzHihGOKnktatFJytT9vMOAHDFXzo2XZKboc5a6-6VOIJ_sCWk9MMkwc7NYWrXfiaOb8HdRsaSZ3tpLBsr-XjiaaLnX5mXYq8zfy9ycOvj6MVkeFSbV0n3gRVmtEysQAdrUyv-2-Wnq5TqDcgcT5bX0dQCtgEVXsf3d0NxEkn7wzu6y51IEBAuP6iSqtXx5Uj7ijGRPZVyxli-kKOx-bC1jZmCkcm_WJgB3mi1FXRWeZGnNVYQo0Ey4j5C-NqAlrm3b85cC7YWcaehsWUU15Njs9NGPQLUFS9Mn4rHBWadw',
    e: 'AQAB',
    d: 'E2Vs3boZxcgNX44DHtW6j_2Xkz1h6pkY0aRGkcgfrk-wRshTYFyLXdyAWc9rbBllWYbOHpVb4cEDybMY2N4ZAlzbhAhpM5TZBhMcoReeeCPhajHf9err5Ix81nyrEMqjtPVuT-lMFeybq38LLzCDvZwXyTqEhBgr6Nd4rqK0UdoG-akfNXf4Z-egh_0Mi8bKbBv2CqAGmH6NUlW9BArTczwcDU3g3OPvOcSd8j-Lm6qNB_-rlvK_FCeG3QDQG7hN5l0JCr1Zlv6MrBhrLi6bsGH0nmeJixWf5asd_XwODFRIkkBjdCJ_VECtjkYnjzS9OOOSWJdpSg4NtOHC0iLIAQ',
    p: '7gHDN0yik5Ue9LTQVIzqAMCGTzpCvZN58pFkWNFNVNpoNGFZxqLlQvbgVDra82p8V1azyeVswiDFH4wuVJYS_QR3a5LXrBIuKvTA2f2-X_0FE45Pqim0eFPt4OADLcN4oBdKsN8QwO0MnDfYbTQjtogJHkU_nN-wuUj9xL4z39k',
    q: '7V9xnE0PPVqgEAjXqV3H_VXv10cRqqVU1F7TC_srIs-vbVHsOs-hkFlqDQuoqkPvKw5b7_16YCidBKagcdC-Awi6BuvGCxTMON3fkoAcsWhcteKaqQC0gUxzHA5GH222rk6XH9Uepg7cD92x3w-_ufnwWaoG1jJymomGdSB6Ks8',
    dp: 'F0SW2CYm0rTGZPf0Uf_AtLgdqUsx0STEzEEIhWJY5A3CGDTYOQId1bEa90EVvKxRYZx5USibvFLF0rK6qMxPKOsx3ZNqgEj6uHpbDDSxUuMChwnnoeQX35ec7toXlXbBqSz9wVLdaW8DR5ZyEyMAxsx_z7THZke8GDEZlg1eNuk',
    dq: 'e-zzXF2i0i5JGHX1WbfbXDiMccDpyURtqD4lQsELgS4acSFvCjkyKTF1O4BVuyaia8EgYIfeZuttJmtzolgPi3f33vsittBR2nKDcXGvCTPqCw9WHVt_4W0vP3t4Qpo94HypS3YxfRKO8z2TylfnicmiIL2yugs2Z9Xau7WL8mM',
    qi: 'sNVCBMSsGoo1PKpP-hILhKE04816KIgjVaXT__9LWGwK2G5kszoLARhePmu0i5snu4ez-ZB4NKVDN3k4Fog7Ng_z5Hy2901yi_xro2Bbs-_EclJGOA5JHxyVfhLiaFZJ5Iu0J8_yyD3Zswg27QaKxrkNtQqOyYdjmcXLB2dIvs4',
    kid: 'apple-1',
    alg: 'RS256',
    use: 'sig',
  },
  'google-1': {
    kty: 'RSA',
    n: 'vmJbUQSh4kpPTGzAW4rWz8cGoKPu6ml5Mco3yHhuhgc_8Ih6AGJsIfGQ46oPNfOk5LigvVi-NtXxUiOhtXhSrLXYlvqoG8WULfpmDBwOhAs6qtbVS2C0MMMhLRKToKbsED-qZYg6t4OZFskpYbWCR9bbsflhSIWZIBcC9fBLW1_8yxjYBcZ3bS3DIR8kcve8HfQqPstotXJM-sj2A8HKWNveHbs-uT_54_0Nu8pJ-GmsiOx9qMTsCTpTpnMVo_EAwVLheCQQHRvrDhAy9FTh5dCefMRKLWbYayI2Sk4oqaWQXWxi2F4uLIMXwO0qIK0CU-hYsmH6DRgOBW2doE3jKw',
    e: 'AQAB',
    d: 'AfE7DZl9xt3ZxLPj_ysXDrl_I6VqSUxGgcF6HIxp_ZSddxojkH_-xzL8UycrR47L1pajZLsii2_lOBl5vV6bDVIjLGB7R1sISM-TyCsRVNgXX2lfyuwhs1810NOgFH-Pdmz5oavhLs7j1saBY4SjJq4kiKYgLB8ulSJIvp16QR1Sduc7OLyo8OjDm2b_f6lyTK0KRJr9fgWrqw8bUjlyAqGDrhgz-562YB3IrUA9E7MJW_XRcTYPLbbnyuINiqruOUhEZbD020FoMPmSue-2Ki2BvrFOHX9gbFv6JkbeMqAVrYeOQMdNVI2fwVnE6_CjOmlbFssNq_5X9XR_5uOncQ',
    p: '4u1PrwVJQCx_pEr-qkSNq6o4hyoOEur3UeNzwrjXBJhJ34k52dCrnPh6jH6pD6uNnlM4N77pGH7yqqY_ndoNuPYu5pwPU3VML_CjSWkdvXDjfM2KOlRIu5Kb4woK2IPPaMKb6UvM8vyt4-JJFB7_UTszQY73gVlK7kx7vFIovfs',
    q: '1saGbUYMjwi40E2L1C7GkQ3R3aCw4BIlFAof2vQtU1jn5YCIro29e2y8VerHS3f5v8MyXTczVgqDfl54hah7MvOEVX3HDqOVfT1LgMzh5BGAnSFpyH6h9hAfmk5m0xiwaOKZw2GkWt9m-_p5x4qvel4wl15TTJbIBApdsfoEWJE',
    dp: 'Armc0lo65fVi1wM7iannFZ-mrCDaKGn_7FDR7A2yL1Dw2ilYs3_o_6qQNi2zNAf4XGVdcHXvcKbdnST_8JJUxdrW91f6ayMmdhDqtQ_5FnRLlw0U0tx-PxpkmtZdCPqUPArSOnv5ixVztR_bhs1UfZI7bFceK8R5vODYP4uxB48',
    dq: 'HmVMQwzF3DxUw44l-up_yamWCPKj9aI7wyFHrtodzAzqDM3rCiEfLueNo-8tM14QZ3Y9m3mjd0rXnzvJfMkCXoyeLuc1E7pM_sN8-waD9Z4QgKxo5yocy9EuV80-uiNlXAKt1jvsYbv6PDEPqRDUktHfuJxt14oDVqcM6ZJDqTE',
    qi: 'oamMlowQ7iX0fEgMkYXGfsQYJ40xN6-TwbtgL8xJMEltWpX4zucSaEdHS_t_2DCus0mBWZid4HnGXDMo5hsNCDAInajGZK8fVv-u9ki_jZKsTibK4YRLCBQINS63RmEXU3aKrF60KF7covbp9xmZ6dyGjFeIohuGsUjRQmVpbdg',
    kid: 'google-1',
    alg: 'RS256',
    use: 'sig',
  },
  'rotating-1': {
    kty: 'RSA',
    n: '-R5xavR7sDPYrfubpPtNU_vrK384-jgHghSVrM6F-ORi6Mma8oal06C9Sg89ULubner4qC6POGCmLxdjiCLJKCxvoygtKPZfn-eiAs913MyZ8odBPUDG3KpQaI8xOSUhMs-XVtzAeBq8zpR1VScLjAH3vvz_x5s9bGQH5HNBqFqmkt0WWsfJoXEI6mlir747jqSFagOncLQ9ciii2_w7iA6IzRfNc7zgv5BO1xXAd9XRpbBq5APU9ictwZD-YczZ5Ov8JwCxXoeISjuL0I8FrP065HH9UTYtm4Wkj1ks_qM4jP7zyme0EX6i27OVC7M_NzMND8G-QgI7IwwDX71rKQ',
    e: 'AQAB',
    d: 'BaSFjSTchM2n1XOxFJuVe-wsaUNdyM0jM7uHL32FK1UrqF29_2dtXbFWX2ODpVzv1d6JFRt433NfM9HcsQ_RiUdqKpfq0YDtyY-pJKq1bSyuHjkZLaSrwAIGPnR_3HuAJshCSqHVa_92J1tHRfoMbj2kR9SE_cI5-Q4ZNP_ucFjY-LOCeEsR2xjDIoZm0GKNPA7aY4dJc6Al0FL01nGqX0vneGiEDSkhqZH_CDEikPAhodr6Jp8KVF3vLfCVb50Z0M3avWqvFcREHou_TjqtA5Bkuhl41Wej8dfRlkjcBVrNrFuPhXaeCuvcABUhtck0F4ghcIa6IpuJCitGYzPhwQ',
    p: '_lqXc-DFG5C4KjIE63vUzWs8P_AvUiiP4K7Kttq2bqhHe1ydiBQVmFozwjYlkbKUZdx19X1XxJsNuNNAdQvDXZqptM-ctoLqBRUsoQc1sXll3hHJJwk3S3hiXGlwScjTM0ejHLz7EpqGjjZK69hT5mzLI3oQG50x53ISS_w2th8',
    q: '-rstokfZEsnosih91a__TURGDFi8U7Tbmzm62OiLQTYSiEAKDr30cGZDdWkcUMAxCQdv4Vm-S418yt-jpwp8XMQvHnYIm26BcPC2YKKH1KiKlsw5p0KzsKybLc1YFmleXiwovNDjSdJ2u9KWpXp1QCMMOpBMxOeXcHJNAxJZZbc',
    dp: '4fDHKIA5l0ruzUyxYh0V44OmeYV6A5lUdVnPaK7P72w8UzDqHr74j-VQpOxEYzAm8nTrs64sENFLVysQzugsGzIQHjVuGBIin3E3u7MT1xrnimRyMuLU442EkmJ3BJQISD0Sf6y_ur7ZV-qSkv4PSVjK-jCrrlvswJNr_WOFljE',
    dq: '73rAh3OgfjWjsCbEqclETASd80T9--WOq6BkOrFB8LM42DJyaMo-Iu1KGWafyPEI5NrZnaAeBgPJ4evhX7bAOcqYRrvuVKcjsz_2si4LFq80T_wYRQ2Mm38BaKntLNrPa5s5_b52mRgQmCz3_m4Md4oCMB2LdbbOCnTh4cEw6dk',
    qi: '7iwNMoac9uHhSeFwOp08vEvAQTMLyjEnWxLIpnPvhn5JSdN-ea-xH4GT2Mzl77QCAgiKJw6V7i-9HMcluVYgzUjGxbY0aMS7bbQdcxvRlhjpWJjKmNB543_kzkJ11fI3xoxy_J3NnGbEic_6qVb8J7SnS8thb5giSf_rMeEWFg',
    kid: 'rotating-1',
    alg: 'RS256',
    use: 'sig',
  },
  'rotating-2': {
    kty: 'RSA',
    n: 'yt-vH1NsBVpwfombEbRnOppo4nZzLUHVFh7p8ZdXAseWSy067JXmDxoSvi_dVCF7UwH5qbgTAcunzN4j0p0wGZ385O5cAa2P9p9PXBCqSBL3jMSUmoyT4lJ6lS_lHOwXrcemKO_abzSQaPCcrErwncDRy9DvEeGFyIO_rG_bd4q-fBlrmh8CAyDICCKLvbCW1UDDfGE4o_CsonOt2IKhv1sOy_510qa39gDrNZx386DTNortiPFLWT-J6dFfeeqFY91gi5IwgRxurUlvdtVioHsDBwqMR9arLodG9bTNQ0gerSOsM_FdkVptLn-COpm5ZtBDZRE4kzfAzM1WA-qe_Q',
    e: 'AQAB',
    d: 'NUsNde00MzPO2W7MjZoWhA6L_vGe0AS7NVRpoE1hThmgIZ-AGyZFiTIQOmXYfoFNJEEglLUGSTJ2ohq4zlr8h7448OqswMQXTXIMJuM52DUjUpdRckf7kTiZexdZ2H8suTn5LEfV2eC1DtwmTBxjmQ1OD3yTUN8thb8WWvYHcR9JUuSORa4CbPhSOt4XEXlwdEJKlAIJrShr9zWaIsZeLF4boh41cp1pM3ynmdKt0bUulbVXzRlap5q6kE8jolIJK6JhWWgBoumCCEoc5ZT7CECde4qSLxKT3F2JUbfb5aQvRxSheKOCuOeovumRR5FiA7VFij1ZEDfx6yrBdgG7AQ',
    p: '9kQvD-yfC-_KzGvTz9AlYxr4o51ySQQ4ffQVB_y4soorghEnktC4qYXawprMOPr4N42uCUrHnSX6UOuJ4kd67TT5jAFcYtr1l5t4MujNgUvqKm7l6un-S2GiC-HjaSp_GRagogbTG-hVdl4iDM6boxT8PIzgrUUtOe-fmnsILfs',
    q: '0uRwDQM0qJa-rcOPLl9_wNjurz3pvHvDOpUgh_6Ecrxg6vEtI3ibzIV5gMas66J806V5PansLqlvijJ6G2QTllCAqcb6ZcEb0oW9pm7V6IJPkjpIlv4hnAJoAFKcXuZYadJovdhYYKSVHjXr-AWl6jqkTjorQsamkcMOnYuxLWc',
    dp: '6mkwmunS4pvX4AlrTs6EJ_fOYH9H_7SiyVGCi13FuTzH-UC2-Irwm3ysJL0QU9SgXNDhrjqeEznJMSli0B7WJeBdASVyeS6Ow0bbfSoYI1DNjqKM-7TLt5kxlDnqK3qmDI17TX9Nh6z5XHhx1Nr9Tph1GHXIj2XfjNxIgdVGje0',
    dq: 'yVnp0cK5yC0FKQqJ7hCn_Qwh95b5T0grAgfX44ASHSnWrvpNyowg1IirlVQbTW76F2jp9QIDyhljsWK4Sual_OIntfGQqQ5S7hFbHUi9WxzvtAGJxQAmPrndalF1kvYCfCa0cm3ZE4yQAyQgg9GAs74Bmd7X5w2bg5fkoG77Xwk',
    qi: 'Cf_REEdf92cRTXrxQ23XMrgywkuNEzbC5PR2IausgNzrkmvvM1X6ntDpJyaxnGNxhcWJs7IrTsYBPzlrVHe6pZtnNIUlhQZRgi3ja0s7tbxysOw_-bFju5OPgAt0juu5NLvmnst0suz9OzDa34mx2KcDR0-2xS0Kh6kR8FOAO8k',
    kid: 'rotating-2',
    alg: 'RS256',
    use: 'sig',
  },
  'stranger-1': {
    kty: 'RSA',
    n: 'tZIm4XY6okobhb6Ci2tQc8Lac192ZaMyhemTkorYfrfue3IVElj3ZQdK0urWlb0eb0Wg7wq0SgzLLnEsHtw7TUNN81dihGty2Gu0hUgSHXRnbUEFnJMsNqJayORmNGxPE9scu_EGftpOYxdqiAdrDKPWwrRqDzv37zjjhlexDEQZikel5tD8tyKBxHGq4fctGSZLnq4TUOmq-A0Q8qJ0pX-cDn97rNrEtXLoYQVu5XlKD5eIumbZJ_TDLRkjX-0wK9Lscvuww-6d3PQ1lchS5i6fv0UTFO1OMIaZa9ltZwjGhcQVTvozyTuwJpOybQ8GrBPLeW9PUskZWhOeO7r7-Q',
    e: 'AQAB',
    d: 'AW7Eo6rlyxhF8odwu4k0dpoQbvcjKYZjHe2gvd2Ibk4GB9TzWyp7VulF1iFa5hKS7kz6DmcnVyJymvHhWm7YvvFyM6bzrQBmC4DQrqW4IB1Wsbi9kjLL_MXkHWQRN7Jvkev4UtB9w65xrU_VNoQVS90dpJ1rcXEFDp5uWStrqES1zfAFSvojHN-pIAIXegc3E-73fCOiWO161l69cs5FDb57V57gsv3vWXd05HM_J25KtOVQCdc8q4TW0iBnAbpkxHgNsn7KZAVnU40CyzSd5SU0dc4_OX_u71pFV9hJ1NBBiBFsmTGY-jq1Ac8dBE0nuJD44XEsdeRNWojLPWMxCw',
    p: '7prBL0P1BLf-zCPGUZFihbT2crlrTszYdHeQSS20BfnTgtvZWD_AHjse0H_bpMDxTuvshzHXC1TWdVB1KJ-43fGzCM6xEOQMXl0lV5St8Z8RCMoHwl0SfF0qrFvHa0hH034lCEQ_qOYJL-rQ5V8j0HFsUcb5Wl7-AFTHlpeShkM',
    q: 'ws7wSAAQxDUcC59vdJpD23FpYbCh_o9ECZ7i1UrLN4RbqVWaainHgmeyrupjrQJU0g0iPABUYl_0ixgde2ytAR2YISG3MMcww2Ag8WiuSj9tTNCdQ1LYqrqU4RTlXd36hR9E3HFwjOb0kjE8rYHhRAGnUFoM88jiXx3s2EHZFxM',
    dp: 'YAwBidI0NiMOuQQJl9oLK8Ftlz7WWFETLMbYWOzB08n9_2YaNnDrGAA6Zjmho89bE6bafo1sgA41ieHKV4D7_LOHmxsAocj6xZ1_I6Mg5etfAwe4Wd_3SgKC5ADJ5ICjERptM8etTILU3eoLDtneY9DUhpKu21bzrhRyh0caX1s',
    dq: 'd2xFAN6JaL7mInnq6aBoWO59m9WceWF6ZCtzAy6GxdHuHzDLKKnUFK1dbL1jvXvgY6SJiB7rnCMW1u5BpJhKtpRd3nG8y7pQunUDvPpfXkTjzGNXBR6UlJUtD46vzYt3OISiwkEIrlgnNjfY6sTkQ7x_xVJu_kP4AjdmKmyzmOE',
    qi: 'Qx-SY1YXUWYy8-7NpNuB6Uje7T4emsX_bfGoACyzOm94bTEc71C6yab0xpFdxoODVXAnxloTawLCDRmABf4q3s4h4ccl-wxQABfVR58sJYnMM-PEswq3tfCeGDdi2O5u0UeshfxdhlrzSQ-2mMw8kR1iIJy2C27zia3zLDadBYk',
    kid: 'stranger-1',
    alg: 'RS256',
    use: 'sig',
  },
  'google-es-1': {
    kty: 'EC',
    x: 'lB6Gg9cFemarR05VS0uDhAd9sGVmcobfn-Lnbu0CMQI',
    y: 'xcUC_eCO_GG0lghirAsfJEYutBrQyVG4AVmYkGmsmhg',
    crv: 'P-256',
    d: 'A4gEIb36pAY0JjBul__8oBSe5HQqwJqXzY8cPQ0INPw',
    kid: 'google-es-1',
    alg: 'ES256',
    use: 'sig',
  },
} as Record<string, TestJwk>

/** The providers of OIDC_PROVIDERS in vitest.config.ts. */
export const TEST_PROVIDERS = {
  apple: {
    issuers: ['https://appleid.apple.com'],
    jwks_uri: `${PROVIDER_ORIGIN}/apple/keys`,
    audiences: ['com.example.edgepress'],
    nonce: 'sha256',
  },
  google: {
    issuers: ['https://accounts.google.com', 'accounts.google.com'],
    jwks_uri: `${PROVIDER_ORIGIN}/google/keys`,
    audiences: ['1234-android.apps.googleusercontent.com', '1234-ios.apps.googleusercontent.com'],
    nonce: 'plain',
  },
  // Serves rotating-1 until POST /__control/rotate, then rotating-1 and rotating-2.
  rotating: {
    issuers: ['https://rotating.example'],
    jwks_uri: `${PROVIDER_ORIGIN}/rotating/keys`,
    audiences: ['rotating-client'],
    nonce: 'plain',
  },
  // Its JWKS endpoint is down (503), or answers something that is not a JWKS.
  down: {
    issuers: ['https://down.example'],
    jwks_uri: `${PROVIDER_ORIGIN}/down/keys`,
    audiences: ['down-client'],
    nonce: 'plain',
  },
  garbled: {
    issuers: ['https://garbled.example'],
    jwks_uri: `${PROVIDER_ORIGIN}/garbled/keys`,
    audiences: ['garbled-client'],
    nonce: 'plain',
  },
} as const

/** The public half of a test key, as a JWKS publishes it. */
export function publicJwk(kid: string): Record<string, string> {
  const { kty, crv, x, y, n, e, alg, use } = PRIVATE_KEYS[kid]!
  const members = { kty, crv, x, y, n, e, alg, use, kid }
  return Object.fromEntries(Object.entries(members).filter(([, value]) => value !== undefined)) as Record<
    string,
    string
  >
}

// State of the fake provider, in the Node process that runs the pool (shared by every test file).
const hits = new Map<string, number>()
let rotated = false

const KEY_SETS: Record<string, () => string[]> = {
  '/apple/keys': () => ['apple-1'],
  '/google/keys': () => ['google-1', 'google-es-1'],
  '/rotating/keys': () => (rotated ? ['rotating-1', 'rotating-2'] : ['rotating-1']),
}

const json = (body: unknown, headers: Record<string, string> = {}): Response =>
  new Response(JSON.stringify(body), { status: 200, headers: { 'Content-Type': 'application/json', ...headers } })

/**
 * The whole outbound network of the worker under test. Control endpoints (fetched by the tests):
 * POST /__control/reset, POST /__control/rotate, GET /__control/hits?path=/apple/keys.
 */
export function handleProviderRequest(request: Request): Response {
  const url = new URL(request.url)
  if (url.origin !== PROVIDER_ORIGIN) return new Response('No network in the tests.', { status: 502 })
  if (url.pathname === '/__control/reset') {
    hits.clear()
    rotated = false
    return json({ ok: true })
  }
  if (url.pathname === '/__control/rotate') {
    rotated = true
    return json({ ok: true })
  }
  if (url.pathname === '/__control/hits') return json({ hits: hits.get(url.searchParams.get('path') ?? '') ?? 0 })
  hits.set(url.pathname, (hits.get(url.pathname) ?? 0) + 1)
  if (url.pathname === '/down/keys') return new Response('upstream down', { status: 503 })
  if (url.pathname === '/garbled/keys')
    return new Response('<html>not a key set</html>', { status: 200, headers: { 'Content-Type': 'text/html' } })
  const keySet = KEY_SETS[url.pathname]
  if (keySet === undefined) return new Response('not found', { status: 404 })
  return json({ keys: keySet().map(publicJwk) }, { 'Cache-Control': 'public, max-age=3600' })
}

export interface IdTokenOptions {
  kid: string
  iss: string
  aud: string
  sub: string
  email?: string
  /** Apple sends "true"/"false" strings, Google booleans. */
  email_verified?: boolean | string
  nonce?: string
  /** Seconds since the epoch; default now. */
  iat?: number
  exp?: number
  /** Extra or overriding claims. */
  claims?: Record<string, unknown>
  /** Header fields to override (alg, kid). */
  header?: Record<string, unknown>
}

/** Signs an ID token with a test key, as the provider would. */
export async function signIdToken(options: IdTokenOptions): Promise<string> {
  const { SignJWT, importJWK } = await import('jose')
  const jwk = PRIVATE_KEYS[options.kid]!
  const key = await importJWK(jwk, jwk.alg)
  const now = Math.floor(Date.now() / 1000)
  const claims: Record<string, unknown> = {
    iss: options.iss,
    aud: options.aud,
    sub: options.sub,
    iat: options.iat ?? now,
    exp: options.exp ?? (options.iat ?? now) + 600,
    // Providers make every token unique; two signed in the same second must differ too.
    jti: crypto.randomUUID(),
    ...(options.email === undefined ? {} : { email: options.email }),
    ...(options.email_verified === undefined ? {} : { email_verified: options.email_verified }),
    ...(options.nonce === undefined ? {} : { nonce: options.nonce }),
    ...options.claims,
  }
  return new SignJWT(claims).setProtectedHeader({ alg: jwk.alg, kid: jwk.kid, typ: 'JWT', ...options.header }).sign(key)
}

/** SHA-256 in lowercase hex: what an app puts in Apple's request for its raw nonce. */
export async function sha256HexOf(text: string): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text)))
  return Array.from(digest, (byte) => byte.toString(16).padStart(2, '0')).join('')
}

/** Calls a control endpoint of the fake provider (through the worker's outbound network). */
export async function providerControl(path: string, method = 'POST'): Promise<Record<string, unknown>> {
  const res = await fetch(`${PROVIDER_ORIGIN}/__control/${path}`, { method })
  return res.json()
}

/** How many times the worker fetched this JWKS path. */
export async function jwksFetches(path: string): Promise<number> {
  return ((await providerControl(`hits?path=${encodeURIComponent(path)}`, 'GET')) as { hits: number }).hits
}
